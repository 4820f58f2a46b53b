"""`ganbench reproduce table1`, `check` and `figures`: the paper's artefacts."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ganbench import SHIPPED_GENERATOR
from ganbench.cli.common import (
    add_backend_options,
    add_data_options,
    check_backend,
    check_out,
    load_gan_generator,
    print_json,
    seed_number,
    start_cpu_pass_build,
)
from ganbench.defaults import BACKENDS, DEFAULT_OUT, DEFAULT_PROTOCOL
from ganbench.devices import resolve_device
from ganbench.errors import GanbenchError
from ganbench.scoring import protocol

TRAIN_EPOCHS = 300          # reproduce --train: epochs of the shipped recipe ...
TRAIN_OUT = "runs/table1"   # ... and its run folder


def command_reproduce(args) -> int:
    from ganbench.paper import table1

    # Everything that can be refused is refused before minutes of work.
    if args.device is not None:
        resolve_device(args.device)
    check_backend(args.backend, args.device)
    if args.tfd is not None and not Path(args.tfd).is_file():
        raise GanbenchError(f"--tfd {args.tfd} is not a file; pass TFD_48x48.mat, or leave --tfd out")
    check_out(args.out, folder=True)
    training = {"--train-epochs": args.train_epochs, "--train-out": args.train_out}
    if args.train and args.generator is not None:
        raise GanbenchError("--generator names a generator to score and --train trains one to score: drop one")
    if not args.train and any(value is not None for value in training.values()):
        given = ", ".join(flag for flag, value in training.items() if value is not None)
        raise GanbenchError(f"{given} {'set' if ',' in given else 'sets'} up --train; without --train "
                            f"{'they' if ',' in given else 'it'} would do nothing: add --train or drop {given}")
    args.train_epochs = TRAIN_EPOCHS if args.train_epochs is None else args.train_epochs
    args.train_out = TRAIN_OUT if args.train_out is None else args.train_out
    args.generator = str(SHIPPED_GENERATOR) if args.generator is None else args.generator
    if args.train:
        check_out(args.train_out, folder=True, flag="--train-out")
    else:
        load_gan_generator(args.generator, "--generator")
    config = table1.Table1Config(generator=args.generator, seed=args.seed, protocol=args.protocol,
                                 backend=args.backend, device=args.device, data_dir=args.data_dir, tfd=args.tfd)
    start_cpu_pass_build(args.backend, args.device)
    if args.train:
        config.generator = str(table1.train_shipped_recipe(Path(args.train_out), args.train_epochs, args.seed,
                                                           args.device, args.data_dir))
    result = table1.write_outputs(table1.reproduce(config, ["ganbench"] + sys.argv[1:]), args.out)
    if args.json:
        print_json(result)
    else:
        print(table1.to_markdown(result))
        print(f"wrote {args.out}/table1.json, table1.md, table1.csv", file=sys.stderr)
    return 0


def reproduce_interrupted(args) -> str:
    from ganbench.gan.train import CHECKPOINT_NAME

    if not args.train:
        return "no table was written"
    run_folder = args.train_out or TRAIN_OUT  # None when interrupted before the defaults were filled in
    if not (Path(run_folder) / CHECKPOINT_NAME).exists():
        return "no table was written, and no training epoch had finished, so nothing was saved"
    return (f"no table was written; the finished training epochs are saved in {run_folder}, "
            "and the same command resumes them")


def command_check(args) -> int:
    """Re-score a saved result (``kind`` ganbench.parzen_result) or a table1.json (older ones have no kind)."""
    from ganbench.paper import table1
    from ganbench.scoring import results

    if Path(args.file).is_dir():
        raise GanbenchError(f"{args.file} is a folder; pass a table1.json or a result file saved by --save")
    kind = results.read_json(args.file).get("kind", table1.KIND)
    if kind == results.KIND:
        if args.rows:
            raise GanbenchError("--rows selects rows of a table1.json; a saved parzen result has none")
        ok, frame = results.check(args.file, backend=args.backend, device=args.device)
    elif kind == table1.KIND:
        if args.device:
            raise GanbenchError("--device applies to saved parzen results; a table1.json is re-scored as stored")
        rows = tuple(row.strip() for row in args.rows.split(",")) if args.rows is not None else None
        if rows is not None and not all(rows):
            raise GanbenchError(f"--rows {args.rows!r} names an empty row; give row keys separated by commas")
        ok, frame = table1.check(args.file, rows, backend=args.backend)
    else:
        raise GanbenchError(f"{args.file} has kind {kind!r}; ganbench checks {results.KIND} and {table1.KIND} files")
    with_strings = frame.assign(ok=frame["ok"].map({True: "ok", False: "MOVED"}))
    print(with_strings.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    if not ok:
        moved = frame[~frame["ok"]]
        names = (moved["row"] + " " + moved["field"]) if "row" in moved else moved["field"]
        print(f"ganbench: check failed: moved beyond its tolerance: {', '.join(names)}", file=sys.stderr)
        return 1
    return 0


def command_figures(args) -> int:
    from ganbench import data
    from ganbench.paper import figures

    check_backend(args.backend, None)  # figures take no --device: the GPU if there is one
    check_out(args.out, folder=True)
    load_gan_generator(args.generator, "--generator")  # a wrong file is refused before MNIST is loaded
    beside = Path(args.generator).parent / "train_log.csv"
    train_log = args.train_log or (beside if beside.exists() else None)  # no log: no curve
    if train_log is None:
        print(f"ganbench: no train_log.csv beside {args.generator}: no training curve (pass --train-log)",
              file=sys.stderr)
    mnist = data.load_mnist(args.data_dir)
    print(f"ganbench: figures of the generator {args.generator}", file=sys.stderr)
    paths, _ = figures.all_figures(args.generator, mnist, args.out, seed=args.seed,
                                   backend=args.backend, train_log=train_log)
    if not args.no_baselines:
        from ganbench.baselines import report

        # Each shipped baseline's samples beside their nearest training images, and its curve;
        # their memorisation reports beside them (docs/baselines.md quotes this file).
        baseline_paths, reports = report.baseline_figures(mnist, args.out, seed=args.seed, backend=args.backend)
        paths.update(baseline_paths)
        if reports:
            from ganbench import atomic

            paths["baselines_memorization"] = atomic.write_text(
                Path(args.out) / report.REPORTS_NAME, json.dumps(reports, indent=2) + "\n")
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def figures_interrupted(args) -> str:
    return f"the figures written before the interrupt are complete; the others in {args.out} were left as they were"


def add_parsers(commands, formatter) -> None:
    reproduce_parser = commands.add_parser("reproduce", help="regenerate a table of the paper", formatter_class=formatter)
    reproduce_parser.add_argument("what", choices=("table1",), help="what to reproduce")
    reproduce_parser.add_argument("--generator", default=None,
                                  help="generator to score (default: the shipped one, results/generator.pt)")
    reproduce_parser.add_argument("--seed", type=seed_number, default=0, help="noise seed of the bank and k-means")
    reproduce_parser.add_argument("--protocol", default=DEFAULT_PROTOCOL, choices=tuple(protocol.PROTOCOLS),
                                  help=f"how sigma is chosen ({protocol.describe_protocols()})")
    reproduce_parser.add_argument("--tfd", default=None, help="TFD_48x48.mat, to measure the TFD column")
    reproduce_parser.add_argument("--out", default=DEFAULT_OUT, help="folder for table1.json, .md, .csv "
                                  "(`--out results` regenerates the committed table)")
    reproduce_parser.add_argument("--train", action="store_true",
                                  help="train a generator first (the shipped recipe: the paper's config, then the "
                                       "epoch with the best validation monitor)")
    reproduce_parser.add_argument("--train-epochs", type=int, default=None,
                                  help=f"epochs for --train (default: {TRAIN_EPOCHS})")
    reproduce_parser.add_argument("--train-out", default=None, help=f"run folder for --train (default: {TRAIN_OUT})")
    reproduce_parser.add_argument("--json", action="store_true", help="print the JSON on stdout")
    add_backend_options(reproduce_parser, precision=False)
    add_data_options(reproduce_parser)
    reproduce_parser.set_defaults(handler=command_reproduce, on_interrupt=reproduce_interrupted)

    check_parser = commands.add_parser("check", help="re-score a saved result or table1.json; exit 1 if a number moved",
                                       formatter_class=formatter)
    check_parser.add_argument("file", help="a result written by `ganbench parzen --save`, or a table1.json written "
                                           "by `ganbench reproduce table1`")
    check_parser.add_argument("--rows", default=None,
                              help="table1.json only: comma-separated rows (default: every measured row of the file; "
                                   "ganbench,training_images,kmeans,gsn_authors,gsn,dbn,cae)")
    check_parser.add_argument("--backend", default=None, choices=BACKENDS, help="override the stored backend")
    check_parser.add_argument("--device", default=None, help="saved results only: override the stored device")
    check_parser.set_defaults(handler=command_check)

    figures_parser = commands.add_parser("figures", formatter_class=formatter,
                                         help="Figure 2, Figure 3, samples, the distance histogram, training curves "
                                              "(the baselines' too)")
    figures_parser.add_argument("--generator", default=str(SHIPPED_GENERATOR), help="generator to draw")
    figures_parser.add_argument("--seed", type=seed_number, default=0, help="noise seed")
    figures_parser.add_argument("--train-log", default=None,
                                help="a run's train_log.csv for the training curve (default: the one beside --generator)")
    figures_parser.add_argument("--no-baselines", action="store_true",
                                help="only the GAN's figures, not those of the Table 1 baselines in results/baselines")
    figures_parser.add_argument("--out", default=f"{DEFAULT_OUT}/figures", help="output folder for the PNGs "
                                "(`--out results/figures` regenerates the committed figures)")
    figures_parser.add_argument("--backend", default="auto", choices=BACKENDS,
                                help="scorer backend of the memorisation panels")
    add_data_options(figures_parser)
    figures_parser.set_defaults(handler=command_figures, on_interrupt=figures_interrupted)
