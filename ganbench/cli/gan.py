"""`ganbench train`, `export` and `sample`: the paper's MNIST GAN (--model gan), or a Table 1 baseline,
handed over to ganbench/baselines/commands.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ganbench.cli.common import add_data_options
from ganbench.defaults import DEFAULT_MODEL, MODELS
from ganbench.errors import GanbenchError


def _add_model_option(parser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=MODELS,
                        help="gan: the paper's; gsn, dbn, cae: the Table 1 baselines (docs/baselines.md)")


def command_train(args) -> int:
    if args.model != "gan":
        from ganbench.baselines import commands
        return commands.train(args)
    from ganbench import data
    from ganbench.gan.train import resolve_config, train

    flags = {"epochs": args.epochs, "seed": args.seed, "discriminator_steps": args.k,
             "generator_loss": args.generator_loss, "train_subset": args.train_subset}
    config = resolve_config(args.out, args.resume, args.config,
                            **{name: value for name, value in flags.items() if value is not None})
    state = train(config, args.out, resume=args.resume, device=args.device or "cpu",
                  data=data.load_mnist(args.data_dir), max_minutes=args.max_minutes)
    last = state.log[-1] if state.log else {}
    monitor = last.get("parzen_valid", float("nan"))
    print(json.dumps({"out": str(args.out), "epochs_done": state.epochs_done, **last}) if args.json else
          f"trained {state.epochs_done} epochs into {args.out}; last Parzen monitor {monitor:.1f}")
    return 0


def command_export(args) -> int:
    if args.model != "gan":
        from ganbench.baselines import commands
        return commands.export(args)
    from ganbench.gan.export import export_run
    from ganbench.gan.train import LOG_NAME

    out = Path(args.out or "results")
    export_run(Path(args.run), args.best, out)
    print(f"wrote {out / 'generator.pt'} and {out / LOG_NAME}")
    return 0


def command_sample(args) -> int:
    if args.model != "gan":
        from ganbench.baselines import commands
        return commands.sample(args)
    from ganbench.gan import sampling

    if args.count < 1:
        raise GanbenchError(f"--count must be >= 1, got {args.count}")
    generator, _ = sampling.load_generator(args.checkpoint or "results/generator.pt", device=args.device or "cpu")
    if args.shard_size:
        paths = sampling.write_shards(generator, args.count, args.seed, args.out, args.shard_size,
                                      device=args.device or "cpu")
        print(f"wrote {args.count} samples as {len(paths)} shards in {args.out}", file=sys.stderr)
        return 0
    samples = sampling.generate(generator, args.count, args.seed, device=args.device or "cpu")
    sampling.save_samples(args.out, samples)
    print(f"wrote {args.count} samples to {args.out}", file=sys.stderr)
    return 0


def add_parsers(commands, formatter) -> None:
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
    _add_model_option(train_parser)
    add_data_options(train_parser)
    train_parser.set_defaults(handler=command_train)

    export_parser = commands.add_parser("export", help="ship a run's generator weights and log", formatter_class=formatter)
    export_parser.add_argument("run", help="a `ganbench train --out` folder")
    export_parser.add_argument("--out", default=None, help="folder for generator.pt and train_log.csv (default: "
                               "results; a baseline: <model>.pt and <model>_train_log.csv in results/baselines)")
    _add_model_option(export_parser)
    export_parser.add_argument("--best", action="store_true",
                               help="ship the epoch with the highest validation Parzen monitor, not the last one")
    export_parser.set_defaults(handler=command_export)

    sample_parser = commands.add_parser("sample", help="draw samples from a generator", formatter_class=formatter)
    sample_parser.add_argument("--checkpoint", default=None, help="generator.pt or a checkpoint.pt (default: "
                               "results/generator.pt; a baseline: results/baselines/<model>.pt)")
    _add_model_option(sample_parser)
    sample_parser.add_argument("--count", type=int, default=10_000, help="number of samples")
    sample_parser.add_argument("--seed", type=int, default=0, help="noise seed")
    sample_parser.add_argument("--out", required=True, help="output .npy, (count, 784) float32, or a folder with "
                               "--shard-size")
    sample_parser.add_argument("--shard-size", type=int, default=None,
                               help="write a folder of .npy shards of this many rows, never holding the whole bank")
    sample_parser.add_argument("--device", default=None, help="cpu or cuda")
    sample_parser.set_defaults(handler=command_sample)
