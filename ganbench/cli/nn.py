"""`ganbench nn`: the nearest-neighbour memorisation report."""
from __future__ import annotations

import sys

from ganbench import SHIPPED_GENERATOR
from ganbench import defaults as keys
from ganbench.cli.common import (
    add_backend_options,
    add_data_options,
    check_backend,
    load_gan_generator,
    print_json,
    read_own_data,
    require_at_least,
    seed_number,
)
from ganbench.cli.gan import check_bank_fits
from ganbench.devices import resolve_device
from ganbench.errors import GanbenchError

DEFAULT_COUNT = 10_000
QUANTILE_ROWS = 100  # held-out points from which their 1% quantile (the copy threshold) is more than their minimum
UNSEEN_SPLIT = {"train": "test", "valid": "test", "test": "valid"}  # held-out images for each reference split


def command_nn(args) -> int:
    from ganbench import data
    from ganbench.gan import sampling
    from ganbench.paper import memorization
    from ganbench.scoring import banks

    if args.device is not None:
        resolve_device(args.device)  # checked before any data is read
    check_backend(args.backend, args.device)
    drawing = {"--checkpoint": args.checkpoint, "--count": args.count, "--seed": args.seed}
    if args.samples and any(value is not None for value in drawing.values()):
        given = ", ".join(flag for flag, value in drawing.items() if value is not None)
        raise GanbenchError(f"{given} {'draw' if ',' in given else 'draws'} samples from a generator; with "
                            "--samples they would do nothing: drop them")
    own_data = read_own_data(args.samples, train=args.train, test=args.test)
    if own_data and args.reference is not None:
        raise GanbenchError("--reference picks an MNIST split; with --train and --test your own data is used: "
                            "drop --reference")
    args.reference = args.reference or "train"
    count = args.count if args.count is not None else DEFAULT_COUNT
    require_at_least("--count", count, 2)  # each sample's nearest *other* sample
    check_bank_fits(count, None, "ask for fewer: the report holds every sample in memory")
    if args.samples:
        bank = banks.open_bank(args.samples, None if own_data else banks.MNIST_RANGE, role="samples")
        if not own_data:
            banks.check_mnist_layout(bank)
        samples = bank.read_all()
        if len(samples) < 2:
            raise GanbenchError(f"samples {args.samples} holds {len(samples)} sample; the report needs at least 2 "
                                "(each sample's nearest other sample)")
    else:
        generator, _ = load_gan_generator(args.checkpoint or str(SHIPPED_GENERATOR), "--checkpoint")
    if own_data:  # on the user's own scale: no MNIST range check
        reference, unseen = own_data
    else:
        mnist = data.load_mnist(args.data_dir)
        # The held-out images calibrate the copy rate: never the split searched for copies.
        reference, unseen = mnist.split(args.reference)[0], mnist.split(UNSEEN_SPLIT[args.reference])[0]
    if not args.samples:
        samples = sampling.generate(generator, count, args.seed if args.seed is not None else 0)
    report = memorization.public(memorization.report(samples, reference, unseen, backend=args.backend,
                                                     device=args.device, precision=stored_precision(args)))
    calibrating = len(unseen) - report[keys.KEY_HELD_OUT_IN_TRAINING]  # leaked points calibrate nothing
    if calibrating < QUANTILE_ROWS:  # after the report: an error stays the one line
        print(f"ganbench: warning: {calibrating} held-out points cannot resolve the 1% quantile of their distances "
              f"that the copy threshold is ({QUANTILE_ROWS} or more can): read the copy rate as rough", file=sys.stderr)
    if report[keys.KEY_HELD_OUT_IN_TRAINING]:
        print(f"ganbench: warning: {report[keys.KEY_HELD_OUT_IN_TRAINING]} held-out points are also training points "
              "(leaked between the splits); the copy thresholds are calibrated on the others", file=sys.stderr)
    if args.json:
        print_json(report)
    else:
        unseen_name = args.test if own_data else f"MNIST {UNSEEN_SPLIT[args.reference]} images"
        print(f"nearest {args.train if own_data else args.reference + ' image'}, squared distance quantiles "
              f"(held-out: {unseen_name}):")
        for name in (keys.KEY_SAMPLE_TO_TRAIN, keys.KEY_TEST_TO_TRAIN):
            print(f"  {name:16s} " + "  ".join(f"{k}={v:.4g}" for k, v in report[name].items()))
        print(f"copy rate {report[keys.KEY_COPY_RATE]:.4f} (closer to a training image than 99% of held-out "
              f"images, squared distance < {report[keys.KEY_COPY_THRESHOLD]:.4g}; unseen data: "
              f"{report[keys.KEY_EXPECTED_COPY_RATE]:.2f})")
        print(f"samples identical to a training image: {report[keys.KEY_EXACT_TRAINING_COPIES]}; at least as close "
              f"as the closest held-out image (squared distance <= {report[keys.KEY_NEAR_COPY_THRESHOLD]:.4g}): "
              f"{report[keys.KEY_NEAR_TRAINING_COPIES]} (unseen data: "
              f"{report[keys.KEY_EXPECTED_NEAR_TRAINING_COPIES]:.2f})")
        print(f"samples with an identical other sample: {report[keys.KEY_SAMPLES_WITH_EXACT_TWIN]}; with another "
              f"sample closer than the copy threshold: {report[keys.KEY_SAMPLES_WITH_NEAR_TWIN]}")
        print("most suspicious (sample, train index, distance): " + ", ".join(
            f"({s['sample']}, {s['train_index']}, {s['sq_distance']:.4g})" for s in report[keys.KEY_MOST_SUSPICIOUS][:5]))
    return 0


def stored_precision(args):
    """The narrowest float dtype the files store, at which points count as identical: files are read as float32
    (or float64), so a float16 file's copies are judged at float16, as ``memorization.report`` judges float16
    arrays; None (the report's own rule) when no file stores floats narrower than float32."""
    from ganbench.scoring import banks
    from ganbench.scoring.inputs import narrowest_float_dtype

    stored = [banks.open_bank(path).stored_float_dtype() for path in (args.samples, args.train, args.test) if path]
    narrowest = narrowest_float_dtype(dtype for dtype in stored if dtype is not None)
    return narrowest if narrowest is not None and narrowest.itemsize < 4 else None


def add_parsers(commands, formatter) -> None:
    nn_parser = commands.add_parser("nn", help="nearest-neighbour memorisation report", formatter_class=formatter)
    nn_parser.add_argument("--samples", default=None,
                           help="samples as for `ganbench parzen` (uint8 divided by 255, else in [0, 1]); "
                                "else drawn from --checkpoint")
    nn_parser.add_argument("--checkpoint", default=None,
                           help="generator to sample when no --samples (default: the shipped generator)")
    nn_parser.add_argument("--count", type=int, default=None, help=f"samples to draw (default {DEFAULT_COUNT:,})")
    nn_parser.add_argument("--seed", type=seed_number, default=None, help="noise seed (default 0)")
    nn_parser.add_argument("--reference", default=None, choices=("train", "valid", "test"),
                           help="MNIST split that serves as the training data to look for copies in (default "
                                "train); the test images calibrate the copy rate, the validation images when "
                                "--reference is test")
    nn_parser.add_argument("--train", default=None,
                           help="your own training data to look for copies in, instead of MNIST; with --test")
    nn_parser.add_argument("--test", default=None,
                           help="your own held-out data, whose distances to --train calibrate the copy rate")
    nn_parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    add_backend_options(nn_parser, precision=False)
    add_data_options(nn_parser)
    nn_parser.set_defaults(handler=command_nn)
