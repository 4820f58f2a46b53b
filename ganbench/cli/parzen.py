"""`ganbench parzen`: score a bank of samples on MNIST or the user's own held-out data."""
from __future__ import annotations

import sys
import warnings

from ganbench.cli.common import (
    add_backend_options,
    add_data_options,
    check_backend,
    check_bank_is_not,
    check_out,
    print_json,
    read_own_data,
    require_at_least,
    start_cpu_pass_build,
)
from ganbench.defaults import CHUNK_ROWS, DEFAULT_PROTOCOL, OWN_DATA_PROTOCOL
from ganbench.errors import GanbenchError
from ganbench.scoring.protocol import PROTOCOLS, describe_protocols


def command_parzen(args) -> int:
    import torch

    from ganbench.scoring import streaming

    if not args.timeout > 0 or args.timeout == float("inf"):  # nan fails every comparison
        raise GanbenchError(f"--timeout must be a finite number of seconds > 0, got {args.timeout:g}")
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
    if args.samples is None and args.samples_option is None:
        raise GanbenchError("no samples to score: `ganbench parzen FILE` (a .npy file or a folder of shards)")
    if args.samples is not None and args.samples_option is not None:
        raise GanbenchError("give the samples file once: `ganbench parzen FILE` or `ganbench parzen --samples FILE`")
    args.samples = args.samples or args.samples_option
    if args.save is not None:
        if not str(args.save).strip():
            raise GanbenchError("--save needs a file name (RESULT.json)")
        check_out(args.save, folder=False, flag="--save", inputs=(("the samples", args.samples),
                                                                  ("--valid", args.valid), ("--test", args.test)))
    if args.sigma is not None and args.sigma <= 0:
        raise GanbenchError(f"--sigma must be > 0, got {args.sigma}")
    require_at_least("--chunk-rows", args.chunk_rows, 1)
    if args.split is not None and (args.valid, args.test) != (None, None):
        raise GanbenchError("--split picks an MNIST split; with --valid and --test your own held-out data is "
                            "scored: drop --split")
    args.split = args.split or "test"
    if args.sigma is not None and args.sigma_grid is not None:
        raise GanbenchError("give --sigma (a fixed width) or --sigma-grid (widths to choose from), not both")
    sigma_grid = protocol.parse_sigma_grid(args.sigma_grid) if args.sigma_grid is not None else None
    check_backend(args.backend, args.device)
    start_cpu_pass_build(args.backend, args.device)
    if args.test is not None and args.valid is None:
        # A fixed sigma is chosen on nothing: the held-out data alone are scored.
        if args.sigma is None:
            raise GanbenchError("--test alone needs a fixed --sigma; to choose sigma, give the validation data "
                                "too (--valid)")
        if args.save:
            raise GanbenchError("--save records the validation data a result's sigma could be chosen on: give "
                                "--valid too, or drop --save")
        own_data = (None, read_own_data(args.samples, test=args.test)[0])
    else:
        own_data = read_own_data(args.samples, valid=args.valid, test=args.test)
    # The paper's grid was chosen for MNIST; on the user's own data the search starts from the data's scale.
    protocol_name = args.protocol or (OWN_DATA_PROTOCOL if own_data else DEFAULT_PROTOCOL)
    if own_data:
        # The user's own data, on the user's own scale: evaluate checks the samples against
        # [0, 1] only when the validation and test data lie in it (inputs.held_out_range).
        valid, test = own_data
        bank = banks.open_bank(args.samples, role="samples")
        scored = {"valid": None if args.valid is None else str(args.valid), "test": str(args.test)}
    else:
        bank, scored = banks.open_bank(args.samples, banks.MNIST_RANGE, role="samples"), {"split": args.split}
        banks.check_mnist_layout(bank)  # before MNIST is loaded
        mnist = data.load_mnist(args.data_dir)
        valid, test = mnist.valid_x, mnist.split(args.split)[0]
    held_out = {"validation data": (valid, args.valid), "held-out data": (test, args.test)} if own_data else \
        {"MNIST images": (valid, None)}
    for role, (values, path) in held_out.items():
        if values is not None and values.shape[1] != bank.dimension:
            raise GanbenchError(f"{role}{' ' + str(path) if path else ''} have dimension {values.shape[1]} but the "
                                f"samples {args.samples} have {bank.dimension}; score vectors of one size"
                                f"{'' if own_data else ' (an MNIST image is 28 x 28 = 784)'}")
    check_bank_is_not(bank, {role: values for role, (values, _) in held_out.items()} if own_data else
                      {f"MNIST {args.split} images": test, "MNIST validation images": valid}, args.samples)
    if args.save:  # a saved result carries its arithmetic's error bound: auto scores it with tf32x3
        from ganbench.scoring import results

        args.precision = results.checkable_precision(args.precision)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", protocol.SigmaAtGridEdgeWarning)  # reported below as one line, by rank 0
        score = protocol.evaluate(bank, valid, test, protocol_name, sigma=args.sigma, sigma_grid=sigma_grid,
                                  scorer=streaming.log_likelihood, backend=args.backend, device=args.device,
                                  precision=args.precision, chunk_rows=args.chunk_rows, progress=is_writer)
    # A fixed sigma is chosen by no protocol: the JSON says so rather than name one that did not run.
    result = {"samples": str(args.samples), **scored, "protocol": "fixed sigma" if args.sigma is not None else protocol_name,
              "sigma_grid": sigma_grid.text if sigma_grid else None, **score.as_dict()}
    if distributed:
        result["world_size"] = torch.distributed.get_world_size()
    if is_writer:  # only rank 0 reports
        if score.warning:
            print(f"ganbench: warning: {score.warning}", file=sys.stderr)
        if args.save:
            _save_result(args, protocol_name, score, bank, valid, test)
        if args.json:
            print_json(result)
        else:
            scored_name = args.test if args.test is not None else f"MNIST {args.split}"
            print(f"Parzen log-likelihood on {scored_name}: {score.mean:.2f} +- {score.standard_error:.2f} "
                  f"nats (sigma {score.sigma:.4g}, bank {score.n_bank}, {score.n_test} images, {score.seconds:.1f} s)")
    return 0


def _save_result(args, protocol_name: str, score, bank, valid, test) -> None:
    from ganbench.scoring import results

    inputs = results.Inputs(samples=args.samples, valid=args.valid, test=args.test, split=args.split)
    scoring = results.Scoring(protocol=protocol_name, backend=args.backend, device=args.device,
                              precision=args.precision, chunk_rows=args.chunk_rows, sigma_grid=args.sigma_grid)
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
                               help="your own held-out data to score, instead of an MNIST split; with --valid, or "
                                    "alone with a fixed --sigma")
    parzen_parser.add_argument("--protocol", default=None, choices=tuple(PROTOCOLS),
                               help=f"how sigma is chosen ({describe_protocols()}); default: {DEFAULT_PROTOCOL} "
                                    f"on MNIST, {OWN_DATA_PROTOCOL} on your own data")
    parzen_parser.add_argument("--sigma", type=float, default=None, help="fixed width (skips cross-validation)")
    parzen_parser.add_argument("--sigma-grid", default=None, metavar="WIDTHS",
                               help="widths to choose sigma from, instead of the protocol's grid: a comma list "
                                    "(0.05,0.1,0.2) or logspace:LOW:HIGH:COUNT (COUNT widths from 10^LOW to "
                                    "10^HIGH, as numpy.logspace; logspace:-2:0:20); under full it is the starting "
                                    "grid (widened while its best width is an end, then refined), under paper the "
                                    "whole grid (a best width at an end is reported on stderr and in the JSON)")
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
