"""`ganbench train/sample/export --model gsn|dbn|cae`: the handlers the GAN commands hand over to."""
from __future__ import annotations

import sys
from pathlib import Path

from ganbench.cli.common import print_json
from ganbench.errors import GanbenchError

# Flags of the GAN's commands that mean nothing to a baseline: refused rather than ignored.
GAN_ONLY = {"config": "--config", "k": "--k", "discriminator_steps": "--discriminator-steps",
            "generator_loss": "--generator-loss", "shard_size": "--shard-size"}


def _refuse_gan_flags(args) -> None:
    for name, flag in GAN_ONLY.items():
        if getattr(args, name, None) is not None:
            raise GanbenchError(f"{flag} applies to --model gan only; drop it for --model {args.model}")
    if getattr(args, "device", None) not in (None, "cpu"):
        raise GanbenchError(f"--model {args.model} trains and samples on the CPU; drop --device")


def train(args) -> int:
    from ganbench import baselines, data
    from ganbench.baselines import training

    _refuse_gan_flags(args)
    spec = baselines.module(args.model).SPEC
    flags = {"epochs": args.epochs, "seed": args.seed, "train_subset": args.train_subset}
    config = training.resolve_config(spec, args.out, args.resume,
                                     **{name: value for name, value in flags.items() if value is not None})
    state = training.train(spec, config, args.out, resume=args.resume, data=data.load_mnist(args.data_dir),
                           max_minutes=args.max_minutes)
    last = state.log[-1] if state.log else {}
    if args.json:
        print_json({"out": str(args.out), "model": args.model, "epochs_done": state.epochs_done, **last}, indent=None)
    else:
        print(f"trained {args.model} for {state.epochs_done} epochs into {args.out}; "
              f"last validation monitor {last.get('parzen_valid', float('nan')):.1f}")
    return 0


def sample(args) -> int:
    from ganbench import baselines
    from ganbench.gan.sampling import save_samples

    _refuse_gan_flags(args)
    samples = baselines.sample(args.model, args.count, args.seed, args.checkpoint)
    save_samples(args.out, samples)
    print(f"wrote {args.count} {args.model} samples to {args.out}", file=sys.stderr)
    return 0


def export(args) -> int:
    from ganbench import baselines
    from ganbench.baselines import training

    out = Path(args.out)  # --out results/baselines replaces the shipped weights
    path = training.export(baselines.module(args.model).SPEC, Path(args.run), out, best=args.best)
    print(f"wrote {path} and {out / (args.model + '_' + training.LOG_NAME)}")
    return 0
