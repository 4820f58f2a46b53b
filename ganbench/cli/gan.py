"""`ganbench train`, `export` and `sample`: the paper's MNIST GAN."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ganbench import SHIPPED_GENERATOR, runs
from ganbench.cli.common import add_data_options, check_out, print_json, require_at_least, seed_number
from ganbench.defaults import DEFAULT_MODEL, DEFAULT_OUT, MODELS
from ganbench.devices import resolve_device
from ganbench.errors import GanbenchError
from ganbench.memory import physical_memory


def _add_model_option(parser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=MODELS,
                        help="gan: the paper's; gsn, dbn, cae: the Table 1 baselines (docs/baselines.md)")

def command_train(args) -> int:
    check_out(args.out, folder=True)  # every model's run folder: refused before any epoch
    lock = runs.lock_run_folder(args.out)  # held until training ends (the process's end releases it too)
    try:
        return _train(args)
    finally:
        lock.release()


def _train(args) -> int:
    if args.model != "gan":
        from ganbench.baselines import commands
        return commands.train(args)
    from ganbench import data
    from ganbench.gan.train import resolve_config, train

    device = resolve_device(args.device, default="cpu")
    flags = {"epochs": args.epochs, "seed": args.seed, "discriminator_steps": args.discriminator_steps,
             "generator_loss": args.generator_loss, "train_subset": args.train_subset}
    config = resolve_config(args.out, args.resume, args.config,
                            **{name: value for name, value in flags.items() if value is not None})
    state = train(config, args.out, resume=args.resume, device=device,
                  data=data.load_mnist(args.data_dir), max_minutes=args.max_minutes)
    last = state.log[-1] if state.log else {}
    monitor = last.get("parzen_valid", float("nan"))
    if args.json:
        print_json({"out": str(args.out), "epochs_done": state.epochs_done, **last}, indent=None)
    else:
        print(f"trained {state.epochs_done} epochs into {args.out}; last Parzen monitor {monitor:.1f}")
    return 0


def train_interrupted(args) -> str:
    from ganbench.gan.train import CHECKPOINT_NAME

    if not (Path(args.out) / CHECKPOINT_NAME).exists():
        return "no epoch had finished, so nothing was saved"
    model = "" if args.model == "gan" else f" --model {args.model}"  # a baseline's run is resumed as one
    return (f"every finished epoch is saved in {args.out}; continue with "
            f"`ganbench train{model} --resume --out {args.out}`")


def command_export(args) -> int:
    out = Path(args.out)
    check_out(out, folder=True)
    if args.model != "gan":
        from ganbench.baselines import commands
        return commands.export(args)
    from ganbench.gan.export import export_run
    from ganbench.gan.train import LOG_NAME

    export_run(Path(args.run), args.best, out)
    print(f"wrote {out / 'generator.pt'} and {out / LOG_NAME}")
    return 0


# A bank held whole (no --shard-size) may take at most this share of the machine's memory: the samples, and
# the copy written out, before the command is killed for memory (100 million samples are 314 GB).
WHOLE_BANK_MEMORY_SHARE = 0.25


# What to do instead of holding a bank too large for memory whole.
SHARD_FIX = "add --shard-size (e.g. 100000) to write them as a folder of shards, never holding the whole bank"
FEWER_FIX = "ask for fewer (the baselines' chains write one file)"


def check_bank_fits(count: int, shard_size: int | None, fix: str, dimension: int = 784) -> None:
    """A one-line error, before any sampling, for a bank that cannot be held in memory without --shard-size."""
    needed = count * dimension * 4
    if shard_size is None and needed > WHOLE_BANK_MEMORY_SHARE * physical_memory():
        raise GanbenchError(f"{count:,} samples take {needed / 2**30:,.1f} GiB held whole, more than "
                            f"{WHOLE_BANK_MEMORY_SHARE:.0%} of this machine's {physical_memory() / 2**30:.0f} GiB; {fix}")


def command_sample(args) -> int:
    require_at_least("--count", args.count, 1)
    check_bank_fits(args.count, args.shard_size, SHARD_FIX if args.model == "gan" else FEWER_FIX)
    check_out(args.out, folder=args.shard_size is not None, inputs=(("--checkpoint", args.checkpoint),))
    if args.model != "gan":
        from ganbench.baselines import commands
        return commands.sample(args)
    from ganbench.gan import sampling

    require_at_least("--shard-size", args.shard_size, 1)
    device = resolve_device(args.device, default="cpu")
    generator, _ = sampling.load_generator(args.checkpoint or SHIPPED_GENERATOR, device=device)
    if args.shard_size is not None:
        paths = sampling.write_shards(generator, args.count, args.seed, args.out, args.shard_size, device=device)
        print(f"wrote {args.count} samples as {len(paths)} shards in {args.out}", file=sys.stderr)
        return 0
    samples = sampling.generate(generator, args.count, args.seed, device=device)
    sampling.save_samples(args.out, samples)
    print(f"wrote {args.count} samples to {args.out}", file=sys.stderr)
    return 0


def sample_interrupted(args) -> str:
    if args.shard_size is None:
        return "nothing was written"
    return f"the bank in {args.out} is marked incomplete (scoring it is refused); run the command again"


def add_parsers(commands, formatter) -> None:
    train_parser = commands.add_parser("train", help="train the paper's MNIST GAN (Algorithm 1)", formatter_class=formatter)
    train_parser.add_argument("--out", required=True, help="run folder: checkpoint.pt and train_log.csv, every epoch")
    train_parser.add_argument("--config", default=None,
                              help="JSON object of TrainConfig fields (ganbench/gan/train.py); the flags below override it")
    train_parser.add_argument("--epochs", type=int, default=None,
                              help="train until this many epochs are done (default: 100, or the run's on --resume)")
    train_parser.add_argument("--seed", type=seed_number, default=None,
                              help="seed of weights, dropout, data order and noise (default: 0)")
    train_parser.add_argument("--discriminator-steps", type=int, default=None,
                              help="k of Algorithm 1: discriminator steps per generator step (default: 1)")
    train_parser.add_argument("--k", dest="discriminator_steps", type=int, help=argparse.SUPPRESS)  # the old name
    train_parser.add_argument("--generator-loss", default=None, choices=("non-saturating", "minimax"),
                              help="default: non-saturating (end of Section 3)")
    train_parser.add_argument("--train-subset", type=int, default=None, help="use only the first N training images")
    train_parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    train_parser.add_argument("--device", default=None, help="cpu or cuda")
    train_parser.add_argument("--max-minutes", type=float, default=None,
                              help="stop after the epoch that ends past this wall-clock budget (resumable)")
    train_parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    add_data_options(train_parser)
    _add_model_option(train_parser)
    train_parser.set_defaults(handler=command_train, on_interrupt=train_interrupted)

    export_parser = commands.add_parser("export", help="ship a run's generator weights and log", formatter_class=formatter)
    export_parser.add_argument("run", help="a `ganbench train --out` folder")
    _add_model_option(export_parser)
    export_parser.add_argument("--out", default=DEFAULT_OUT,
                               help="folder for generator.pt and train_log.csv (a baseline: <model>.pt and "
                                    "<model>_train_log.csv); `--out results` replaces the shipped generator, "
                                    "`--out results/baselines` a shipped baseline")
    export_parser.add_argument("--best", action="store_true",
                               help="ship the epoch with the highest validation Parzen monitor, not the last one")
    export_parser.set_defaults(handler=command_export)

    sample_parser = commands.add_parser("sample", help="draw samples from a generator", formatter_class=formatter)
    sample_parser.add_argument("--checkpoint", default=None,
                               help="generator.pt or a checkpoint.pt (default: the shipped generator; a baseline: "
                                    "results/baselines/<model>.pt)")
    _add_model_option(sample_parser)
    sample_parser.add_argument("--count", type=int, default=10_000, help="number of samples")
    sample_parser.add_argument("--seed", type=seed_number, default=0, help="noise seed")
    sample_parser.add_argument("--out", required=True, help="output .npy, (count, 784) float32, or a folder with "
                               "--shard-size")
    sample_parser.add_argument("--shard-size", type=int, default=None,
                               help="write a folder of .npy shards of this many rows, never holding the whole bank")
    sample_parser.add_argument("--device", default=None, help="cpu or cuda")
    sample_parser.set_defaults(handler=command_sample, on_interrupt=sample_interrupted)
