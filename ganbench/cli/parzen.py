"""`ganbench parzen`: score a bank of samples on MNIST or the user's own held-out data."""
from __future__ import annotations

import sys

from ganbench.cli.common import (
    add_backend_options,
    add_data_options,
    print_json,
    read_own_data,
    require_at_least,
)
from ganbench.defaults import CHUNK_ROWS
from ganbench.errors import GanbenchError


def command_parzen(args) -> int:
    import torch

    from ganbench.scoring import streaming

    distributed = streaming.init_from_environment(args.timeout, device=args.device, backend=args.backend)
    try:
        return _score_and_report(args, distributed)
    finally:
        if distributed:
            # Leaving gloo's threads to interpreter shutdown can abort a rank after its work is done.
            torch.distributed.destroy_process_group()


def _score_and_report(args, distributed: bool) -> int:
    import torch

    from ganbench import data
    from ganbench.scoring import banks, protocol, streaming

    is_writer = not distributed or torch.distributed.get_rank() == 0
    if (args.samples is None) == (args.samples_option is None):
        raise GanbenchError("give the samples file once: `ganbench parzen FILE` or `ganbench parzen --samples FILE`")
    args.samples = args.samples or args.samples_option
    if args.sigma is not None and args.sigma <= 0:
        raise GanbenchError(f"--sigma must be > 0, got {args.sigma}")
    require_at_least("--chunk-rows", args.chunk_rows, 1)
    if args.split is not None and (args.valid, args.test) != (None, None):
        raise GanbenchError("--split picks an MNIST split; with --valid and --test your own held-out data is "
                            "scored: drop --split")
    args.split = args.split or "test"
    own_data = read_own_data(valid=args.valid, test=args.test)
    if own_data:
        # The user's own data, on the user's own scale: no MNIST range check on the samples.
        valid, test = own_data
        bank, scored = banks.open_bank(args.samples, role="samples"), {"valid": str(args.valid), "test": str(args.test)}
    else:
        mnist = data.load_mnist(args.data_dir)
        valid, test = mnist.valid_x, mnist.split(args.split)[0]
        bank, scored = banks.open_bank(args.samples, banks.MNIST_RANGE, role="samples"), {"split": args.split}
    score = protocol.evaluate(bank, valid, test, args.protocol, sigma=args.sigma,
                              scorer=streaming.log_likelihood, backend=args.backend, device=args.device,
                              precision=args.precision, chunk_rows=args.chunk_rows, progress=is_writer)
    result = {"samples": str(args.samples), **scored, "protocol": args.protocol, **score.as_dict()}
    if distributed:
        result["world_size"] = torch.distributed.get_world_size()
    if is_writer:  # only rank 0 reports
        if args.save:
            _save_result(args, score, bank, valid, test)
        if args.json:
            print_json(result)
        else:
            scored_name = args.test if args.test is not None else f"MNIST {args.split}"
            print(f"Parzen log-likelihood on {scored_name}: {score.mean:.2f} +- {score.standard_error:.2f} "
                  f"nats (sigma {score.sigma:.4f}, bank {score.n_bank}, {score.n_test} images, {score.seconds:.1f} s)")
    return 0


def _save_result(args, score, bank, valid, test) -> None:
    from ganbench.scoring import results

    inputs = results.Inputs(samples=args.samples, valid=args.valid, test=args.test, split=args.split)
    scoring = results.Scoring(protocol=args.protocol, backend=args.backend, device=args.device,
                              precision=args.precision, chunk_rows=args.chunk_rows)
    result = results.build(score, bank, valid, test, inputs, scoring, args.save, " ".join(["ganbench", *sys.argv[1:]]))
    results.save(args.save, result)
    print(f"saved {args.save}; `ganbench check {args.save}` re-scores it", file=sys.stderr)


def add_parsers(commands, formatter) -> None:
    parzen_parser = commands.add_parser("parzen", help="score a sample bank on MNIST or your own held-out data",
                                        formatter_class=formatter)
    parzen_parser.add_argument("samples", nargs="?",
                               help=".npy/.npz file of samples, (count, dimension) or (count, height, width); "
                                    "uint8 images are divided by 255, other dtypes must be on the data's scale "
                                    "([0, 1] for MNIST); or a folder of .npy shards (streamed; under torchrun, "
                                    "split across ranks)")
    parzen_parser.add_argument("--samples", dest="samples_option", default=None, help="the same, as an option")
    parzen_parser.add_argument("--split", default=None, choices=("train", "valid", "test"),
                               help="MNIST images to score (default: test)")
    parzen_parser.add_argument("--valid", default=None,
                               help="your own validation data (a file or shard folder, as for the samples) to choose "
                                    "sigma on, instead of MNIST's; with --test")
    parzen_parser.add_argument("--test", default=None,
                               help="your own held-out data to score, instead of an MNIST split; with --valid")
    parzen_parser.add_argument("--protocol", default="paper", choices=("paper", "full"),
                               help="paper: logspace(-1,0,10) on the first 1,000 validation images; "
                                    "full: 32 widths on all of them")
    parzen_parser.add_argument("--sigma", type=float, default=None, help="fixed width (skips cross-validation)")
    parzen_parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    parzen_parser.add_argument("--save", default=None, metavar="RESULT.json",
                               help="also write a result file with the inputs' SHA-256 and derived tolerances, "
                                    "which `ganbench check RESULT.json` re-scores (CI regression)")
    parzen_parser.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS,
                               help="bank rows read and scored at a time (bounds memory for banks on disk)")
    parzen_parser.add_argument("--timeout", type=float, default=300.0,
                               help="seconds a torchrun rank waits for the others before failing")
    add_backend_options(parzen_parser)
    add_data_options(parzen_parser)
    parzen_parser.set_defaults(handler=command_parzen)
