"""The other rows of Table 1, trained and scored by ganbench: Deep GSN, DBN-2, Stacked CAE-2.

One module per model (``gsn``, ``dbn``, ``cae``: config, model, training epoch, sampler),
``training`` for the loop they share, ``commands`` for `ganbench train/sample/export --model`.
Shipped weights live in ``results/baselines/<name>.pt`` (docs/baselines.md).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
from pathlib import Path

import numpy as np

from ganbench.errors import GanbenchError

BASELINES = ("gsn", "dbn", "cae")
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "results" / "baselines"
BANK_SIZE = 10_000           # Section 5 of the GAN paper: 10,000 samples
# Bump when a sampler changes, so cached banks are not reused. 2: one GSN chain's products through
# NumPy's BLAS (another order of the sums).
SAMPLER_VERSION = 2


def module(name: str):
    """The module of baseline ``name`` (its SPEC, sampler and config)."""
    if name not in BASELINES:
        raise GanbenchError(f"unknown baseline {name!r}: choose one of {', '.join(BASELINES)}")
    return importlib.import_module(f"ganbench.baselines.{name}")


def shipped_weights(name: str, folder: str | Path | None = None) -> Path:
    return Path(folder or SHIPPED_DIR) / f"{name}.pt"


def load(name: str, path: str | Path | None = None):
    """(model, config, metadata) of a weights file, the shipped one by default."""
    from ganbench.baselines.training import load_model

    spec = module(name).SPEC
    model, metadata = load_model(spec, path or shipped_weights(name))
    return model, spec.config_class(**metadata["config"]), metadata


def sample(name: str, count: int, seed: int, path: str | Path | None = None,
           train_images: np.ndarray | None = None) -> np.ndarray:
    """``count`` samples of a baseline by its own procedure (each module's ``sample``). The samplers whose
    chains start from training images (DBN, Deep GSN) take ``train_images``, MNIST's training split by default."""
    if count < 1:
        raise GanbenchError(f"sample count must be >= 1, got {count}")
    model, config, _ = load(name, path)
    sampler = module(name).sample
    if train_images is not None and takes_train_images(sampler):
        return sampler(model, count, seed, config, train_images=train_images)
    return sampler(model, count, seed, config)


def takes_train_images(sampler) -> bool:
    """Whether a module's ``sample`` starts its chains from training images (DBN, Deep GSN)."""
    return "train_images" in inspect.signature(sampler).parameters


def authors_gsn_bank(path: str | Path | None, start_image: np.ndarray, seed: int) -> np.ndarray:
    """The Deep GSN authors' bank: ``start_image``, then 9,999 consecutive means of one chain from it."""
    from ganbench.baselines import gsn

    model, config, _ = load("gsn", path)
    return gsn.authors_bank(model, start_image, seed, BANK_SIZE, config)


def cached_bank(name: str, kind: str, seed: int, path: str | Path | None = None,
                start_image: np.ndarray | None = None, train_images: np.ndarray | None = None) -> np.ndarray:
    """A 10,000-row bank through the user cache, keyed by the weights' SHA-256, the sampler and the seed.

    ``kind`` is "samples" (independent samples, the GAN paper's protocol) or "authors_chain"
    (the GSN's single chain from ``start_image``). ``train_images``: MNIST's training split, when the
    caller holds it already (see ``sample``).
    """
    from ganbench import cache

    weights = Path(path or shipped_weights(name))
    if not weights.is_file():
        raise GanbenchError(f"no {name} weights at {weights}; train and export them (docs/baselines.md) "
                            "or pass the folder that holds them")
    sampler = module(name)
    key_fields = {"model": name, "kind": kind, "seed": seed, "size": BANK_SIZE, "version": SAMPLER_VERSION,
                  "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                  "chains": getattr(sampler, "CHAINS", None), "burn_in": getattr(sampler, "BURN_IN", None),
                  "thinning": getattr(sampler, "THINNING", None),
                  "sampling_noise": getattr(sampler, "SAMPLING_NOISE", None)}
    if kind == "samples":
        if train_images is not None and takes_train_images(sampler.sample):
            key_fields["train_images_sha256"] = cache.digest(train_images)  # its chains start from them
        compute = lambda: sample(name, BANK_SIZE, seed, weights, train_images)  # noqa: E731
    elif kind == "authors_chain" and name == "gsn" and start_image is not None:
        key_fields["start_sha256"] = cache.digest(start_image)
        compute = lambda: authors_gsn_bank(weights, start_image, seed)  # noqa: E731
    else:
        raise GanbenchError(f"no bank {kind!r} for {name}: 'samples', or 'authors_chain' of gsn from a start image")
    bank, _ = cache.cached_array(f"bank-{name}-{kind}", key_fields, (BANK_SIZE, 784), compute)
    return bank
