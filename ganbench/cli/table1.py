"""`ganbench reproduce table1`, `check` and `figures`: the paper's artefacts."""
from __future__ import annotations

import sys
from pathlib import Path

from ganbench import SHIPPED_GENERATOR
from ganbench.cli.common import add_backend_options, add_data_options, print_json
from ganbench.defaults import BACKENDS


def command_reproduce(args) -> int:
    from ganbench.paper import table1

    config = table1.Table1Config(generator=args.generator, seed=args.seed, protocol=args.protocol,
                                 backend=args.backend, device=args.device, data_dir=args.data_dir, tfd=args.tfd)
    if args.train:
        config.generator = str(table1.train_shipped_recipe(Path(args.train_out), args.train_epochs, args.seed,
                                                           args.device, args.data_dir))
    result = table1.reproduce(config, ["ganbench"] + sys.argv[1:])
    table1.write_outputs(result, args.out)
    if args.json:
        print_json(result)
    else:
        print(table1.to_markdown(result))
        print(f"wrote {args.out}/table1.json, table1.md, table1.csv", file=sys.stderr)
    return 0


def command_check(args) -> int:
    from ganbench.paper import table1

    rows = tuple(args.rows.split(",")) if args.rows else None
    ok, frame = table1.check(args.file, rows, backend=args.backend)
    with_strings = frame.assign(ok=frame["ok"].map({True: "ok", False: "MOVED"}))
    print(with_strings.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    if not ok:
        print("ganbench: check failed: a measured number moved beyond its tolerance (rows marked MOVED)",
              file=sys.stderr)
        return 1
    return 0


def command_figures(args) -> int:
    from ganbench import data
    from ganbench.paper import figures

    beside = Path(args.generator).parent / "train_log.csv"
    train_log = args.train_log or (beside if beside.exists() else None)  # no log: no curve
    paths, _ = figures.all_figures(args.generator, data.load_mnist(args.data_dir), args.out, seed=args.seed,
                                   backend=args.backend, train_log=train_log)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def add_parsers(commands, formatter) -> None:
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
    add_backend_options(reproduce_parser)
    add_data_options(reproduce_parser)
    reproduce_parser.set_defaults(handler=command_reproduce)

    check_parser = commands.add_parser("check", help="recompute a table1.json and fail if a number moved",
                                       formatter_class=formatter)
    check_parser.add_argument("file", help="a table1.json written by `ganbench reproduce table1`")
    check_parser.add_argument("--rows", default=None, help="comma-separated rows (default: every measured row of the file; "
                              "ganbench,training_images,kmeans,gsn_authors,gsn,dbn,cae)")
    check_parser.add_argument("--backend", default=None, help="override the stored backend")
    check_parser.set_defaults(handler=command_check)

    figures_parser = commands.add_parser("figures", help="Figure 2, Figure 3 and the distance histogram",
                                         formatter_class=formatter)
    figures_parser.add_argument("--generator", default=str(SHIPPED_GENERATOR), help="generator to draw")
    figures_parser.add_argument("--seed", type=int, default=0, help="noise seed")
    figures_parser.add_argument("--train-log", default=None,
                                help="a run's train_log.csv for the training curve (default: the one beside --generator)")
    figures_parser.add_argument("--out", default="results/figures", help="output folder for the PNGs")
    figures_parser.add_argument("--backend", default="auto", choices=BACKENDS,
                                help="scorer backend of the memorisation panels")
    add_data_options(figures_parser)
    figures_parser.set_defaults(handler=command_figures)
