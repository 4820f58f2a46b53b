"""`ganbench nn`: the nearest-neighbour memorisation report."""
from __future__ import annotations

from ganbench import SHIPPED_GENERATOR
from ganbench import defaults as keys
from ganbench.cli.common import (
    add_backend_options,
    add_data_options,
    print_json,
    read_own_data,
)
from ganbench.devices import resolve_device


def command_nn(args) -> int:
    from ganbench import data
    from ganbench.gan import sampling
    from ganbench.paper import memorization
    from ganbench.scoring import banks

    if args.device is not None:
        resolve_device(args.device)  # checked before any data is read
    own_data = read_own_data(train=args.train, test=args.test)
    if own_data:  # on the user's own scale: no MNIST range check
        reference, unseen = own_data
    else:
        mnist = data.load_mnist(args.data_dir)
        reference, unseen = mnist.split(args.reference)[0], mnist.test_x
    if args.samples:
        samples = banks.open_bank(args.samples, None if own_data else banks.MNIST_RANGE, role="samples").read_all()
    else:
        generator, _ = sampling.load_generator(args.checkpoint)
        samples = sampling.generate(generator, args.count, args.seed)
    report = memorization.public(memorization.report(samples, reference, unseen,
                                                     backend=args.backend, device=args.device))
    if args.json:
        print_json(report)
    else:
        print(f"nearest {args.train if own_data else args.reference + ' image'}, squared distance quantiles:")
        for name in (keys.KEY_SAMPLE_TO_TRAIN, keys.KEY_TEST_TO_TRAIN):
            print(f"  {name:16s} " + "  ".join(f"{k}={v:.2f}" for k, v in report[name].items()))
        print(f"copy rate {report[keys.KEY_COPY_RATE]:.4f} (closer to a training image than 99% of held-out "
              f"images, squared distance < {report[keys.KEY_COPY_THRESHOLD]:.2f}; unseen data: "
              f"{report[keys.KEY_EXPECTED_COPY_RATE]:.2f})")
        print(f"samples identical to a training image: {report[keys.KEY_EXACT_TRAINING_COPIES]}; at least as close "
              f"as the closest held-out image (squared distance <= {report[keys.KEY_NEAR_COPY_THRESHOLD]:.4g}): "
              f"{report[keys.KEY_NEAR_TRAINING_COPIES]} (unseen data: "
              f"{report[keys.KEY_EXPECTED_NEAR_TRAINING_COPIES]:.2f})")
        print(f"samples with an identical other sample: {report[keys.KEY_SAMPLES_WITH_EXACT_TWIN]}; with another "
              f"sample closer than the copy threshold: {report[keys.KEY_SAMPLES_WITH_NEAR_TWIN]}")
        print("most suspicious (sample, train index, distance): " + ", ".join(
            f"({s['sample']}, {s['train_index']}, {s['sq_distance']:.2f})" for s in report[keys.KEY_MOST_SUSPICIOUS][:5]))
    return 0


def add_parsers(commands, formatter) -> None:
    nn_parser = commands.add_parser("nn", help="nearest-neighbour memorisation report", formatter_class=formatter)
    nn_parser.add_argument("--samples", default=None,
                           help="samples as for `ganbench parzen` (uint8 divided by 255, else in [0, 1]); "
                                "else drawn from --checkpoint")
    nn_parser.add_argument("--checkpoint", default=str(SHIPPED_GENERATOR), help="generator to sample when no --samples")
    nn_parser.add_argument("--count", type=int, default=10_000, help="samples to draw")
    nn_parser.add_argument("--seed", type=int, default=0, help="noise seed")
    nn_parser.add_argument("--reference", default="train", choices=("train", "valid", "test"),
                           help="MNIST split that serves as the training data to look for copies in")
    nn_parser.add_argument("--train", default=None,
                           help="your own training data to look for copies in, instead of MNIST; with --test")
    nn_parser.add_argument("--test", default=None,
                           help="your own held-out data, whose distances to --train calibrate the copy rate")
    nn_parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    add_backend_options(nn_parser)
    add_data_options(nn_parser)
    nn_parser.set_defaults(handler=command_nn)
