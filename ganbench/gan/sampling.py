"""Generators in and samples out: load a checkpoint or shipped generator, draw samples, read sample files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ganbench import SHIPPED_GENERATOR, atomic
from ganbench.devices import resolve_device
from ganbench.errors import GanbenchError
from ganbench.gan.checkpoints import load_payload
from ganbench.gan.models import Generator, sample_noise
from ganbench.progress import progress_bar
from ganbench.runs import check_finite_weights
from ganbench.scoring import banks

GENERATOR_FIX = "train one with `ganbench train`, or pass a checkpoint.pt or generator.pt written by ganbench"
GENERATE_BATCH = 10_000  # noise rows per forward pass of G when drawing samples


def load_generator(path: str | Path, device="cpu") -> tuple[Generator, dict]:
    """A generator from a training checkpoint or an exported ``generator.pt``, with its metadata."""
    device = resolve_device(device, default="cpu")
    if Path(path) == SHIPPED_GENERATOR and not SHIPPED_GENERATOR.is_file():
        raise GanbenchError(f"this ganbench install has no shipped generator ({SHIPPED_GENERATOR} is missing); "
                            "install ganbench from its repository or wheel, or pass a generator.pt of your own")
    payload = load_payload(path, "ganbench generator", GENERATOR_FIX, ("generator",))
    try:
        generator = Generator().to(device)
        generator.load_state_dict(payload["generator"])
    except (RuntimeError, TypeError, AttributeError) as error:
        raise GanbenchError(f"{path} holds weights that do not fit the paper's MNIST generator "
                            f"({type(error).__name__}); {GENERATOR_FIX}") from None
    check_finite_weights(generator, path, GENERATOR_FIX)
    generator.eval()
    metadata = {key: value for key, value in payload.items()
                if key in ("config", "epochs_done", "updates_done", "selection")}
    return generator, metadata


def generator_file(generator_state: dict, config: dict, epochs_done: int, updates_done: int,
                   selection: str | None = None) -> bytes:
    """The bytes of a shipped generator: only G's float32 weights and the run's config (about 10 MB).

    ``selection`` says how this epoch was chosen, when it was not simply the last one.
    """
    slim = {"generator": {k: v.detach().float().cpu() for k, v in generator_state.items()},
            "config": config, "epochs_done": epochs_done, "updates_done": updates_done}
    if selection:
        slim["selection"] = selection
    return atomic.torch_bytes(slim)


def save_generator(out: str | Path, generator_state: dict, config: dict, epochs_done: int,
                   updates_done: int, selection: str | None = None) -> Path:
    """Write ``generator_file(...)`` to ``out`` atomically."""
    return atomic.write_bytes(out, generator_file(generator_state, config, epochs_done, updates_done, selection))


def exported_generator(checkpoint: str | Path, selection: str | None = None) -> bytes:
    """The generator of a training checkpoint (or an already slim generator file), slimmed for shipping."""
    payload = load_payload(checkpoint, "ganbench checkpoint", "pass a checkpoint.pt or generator.pt written by ganbench",
                           ("generator", "config", "epochs_done", "updates_done"))
    return generator_file(payload["generator"], payload["config"], payload["epochs_done"],
                          payload["updates_done"], selection or payload.get("selection"))


def generate(generator: Generator, count: int, seed: int, device="cpu", batch_size: int = GENERATE_BATCH) -> np.ndarray:
    """``count`` float32 samples (count, 784) from G with their own seeded RNG (never the training RNG)."""
    if count < 1:
        raise GanbenchError(f"sample count must be >= 1, got {count}")
    return torch.cat(list(_draw(generator, _batch_sizes(count, batch_size), seed, resolve_device(device, "cpu")))).numpy()


def _batch_sizes(total: int, batch_size: int) -> list[int]:
    return [min(batch_size, total - start) for start in range(0, total, batch_size)]


@torch.no_grad()
def _draw(generator: Generator, batch_sizes: list[int], seed: int, device):
    """G's samples for consecutive noise batches of one seeded stream (never the training RNG)."""
    generator.eval()
    rng = torch.Generator().manual_seed(seed)
    for size in batch_sizes:
        yield generator(sample_noise(size, rng).to(device)).float().cpu()


def save_samples(path: str | Path, samples: np.ndarray) -> Path:
    return atomic.write_npy(path, samples)


def write_shards(generator: Generator, count: int, seed: int, folder: str | Path, shard_size: int,
                 device="cpu") -> list[Path]:
    """Stream ``count`` samples into ``folder/shard-00000.npy``...; memory holds one shard at a time.

    The noise stream is the same as ``generate(count, seed)``, so the shards concatenate to its
    samples up to float32 rounding (G's matrix products round differently at other batch sizes).
    """
    if shard_size < 1:
        raise GanbenchError(f"shard size must be >= 1, got {shard_size}")
    folder = Path(folder)
    shard_rows = _batch_sizes(count, shard_size)
    names = [f"shard-{index:05d}.npy" for index in range(len(shard_rows))]
    banks.begin_shards(folder, names)  # marked incomplete until the last shard is written
    batches = _draw(generator, [size for rows in shard_rows for size in _batch_sizes(rows, GENERATE_BATCH)], seed,
                    resolve_device(device, "cpu"))
    paths = []
    for name, rows in progress_bar(list(zip(names, shard_rows)), desc="shards", leave=False):  # on a terminal only
        parts = [next(batches) for _ in _batch_sizes(rows, GENERATE_BATCH)]
        paths.append(save_samples(folder / name, torch.cat(parts).numpy()))
    banks.finish_shards(folder, list(zip(names, shard_rows)))
    return paths
