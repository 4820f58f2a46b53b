"""Training plumbing shared by the Table 1 baselines: one loop, atomic checkpoints, exact resume.

Each baseline module (dbn, cae, gsn) describes itself with a ``BaselineSpec``: its config
dataclass, how to build the model, one epoch of training and a validation monitor. This
module runs the epochs, writes ``checkpoint.pt`` (model, optimiser buffers, every RNG,
log) and ``train_log.csv`` after each one, keeps the weights of the best monitored epoch
in ``best.pt``, and exports shipped weights. All randomness of a run comes from one
``torch.Generator`` stored in the checkpoint, so a resumed run repeats an uninterrupted
one bit for bit.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from ganbench import atomic, runs
from ganbench.errors import GanbenchError
from ganbench.gan.checkpoints import load_payload

CHECKPOINT_NAME = "checkpoint.pt"
BEST_NAME = "best.pt"          # float32 weights of the epoch with the highest validation monitor
LOG_NAME = "train_log.csv"
CHECKPOINT_KEYS = ("model", "config", "weights", "buffers", "rng", "epochs_done", "log")
WEIGHTS_KEYS = ("model", "config", "weights", "epochs_done")
CHECKPOINT_FIX = "delete it to start over, or point --out at another run"
WEIGHTS_FIX = "pass a weights file written by `ganbench train --model ...` or shipped in results/baselines/"


class MomentumBuffers:
    """SGD with one momentum buffer per parameter.

    ``averaging=True`` is the GSN code's rule (buf = m buf + (1 - m) g; theta -= lr buf);
    ``averaging=False`` the classical one (buf = m buf + g; theta -= lr buf). A gradient of
    None leaves its parameter and buffer alone (a frozen layer of greedy training).
    """

    def __init__(self, parameters, averaging: bool):
        self.parameters = list(parameters)
        self.averaging = averaging
        self.buffers = [torch.zeros_like(p) for p in self.parameters]

    @torch.no_grad()
    def step(self, gradients, learning_rate: float, momentum: float) -> None:
        for parameter, buffer, gradient in zip(self.parameters, self.buffers, gradients):
            if gradient is None:
                continue
            buffer.mul_(momentum).add_(gradient, alpha=(1 - momentum) if self.averaging else 1.0)
            parameter.sub_(learning_rate * buffer)

    def state_dict(self) -> list[torch.Tensor]:
        return [buffer.clone() for buffer in self.buffers]

    def load_state_dict(self, buffers) -> None:
        for mine, saved in zip(self.buffers, buffers):
            mine.copy_(saved)


@dataclass
class RunState:
    model: torch.nn.Module
    optimizer: MomentumBuffers
    rng: torch.Generator            # minibatch order and every noise draw of training
    epochs_done: int = 0
    log: list = dataclasses.field(default_factory=list)


@dataclass(frozen=True)
class BaselineSpec:
    name: str                                              # the --model choice
    title: str                                             # as Table 1 names it
    config_class: type
    build: Callable                                        # (config, train_images) -> model
    optimizer: Callable                                    # model -> MomentumBuffers
    training_images: Callable                              # (config, MNIST) -> float32 array; with train_subset, its
                                                           # first train_subset rows without it
    train_epoch: Callable                                  # (RunState, config, images tensor) -> dict
    monitor: Callable                                      # (model, config, MNIST) -> float
    ship_dtype: torch.dtype = torch.float32                # dtype of the weights in results/baselines/


def bernoulli(p: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Binary samples with means ``p`` (one uniform per unit, from ``rng``)."""
    return (torch.rand(p.shape, generator=rng) < p).to(p.dtype)


def first_training_images(config, data) -> np.ndarray:
    """The training split (50,000 images), or its first ``config.train_subset`` images."""
    return data.train_x[:config.train_subset] if config.train_subset else data.train_x


@dataclass
class SampledRunConfig:
    """The fields every baseline monitored through its sampler shares (DBN, CAE; ``sample_monitor``)."""
    batch_size: int = 100
    seed: int = 0
    train_subset: int | None = None     # first N training images (tests)
    monitor_samples: int = 1_000        # validation monitor: this many samples ...
    monitor_valid: int = 1_000          # ... scored on the first 1,000 validation images ...
    monitor_sigma: float = 0.2          # ... at this sigma


def sample_monitor(sample: Callable) -> Callable:
    """A validation monitor from a sampler: Parzen at ``config.monitor_sigma`` of the first
    ``config.monitor_valid`` validation images under ``config.monitor_samples`` samples."""
    def monitor(model, config, data) -> float:
        from ganbench.scoring import parzen

        bank = sample(model, config.monitor_samples, config.seed + 2, config)
        return float(parzen.log_likelihood(data.valid_x[:config.monitor_valid], bank, [config.monitor_sigma],
                                           backend="torch").mean())
    return monitor


def save_weights(path: Path, spec: BaselineSpec, model: torch.nn.Module, config, epochs_done: int,
                 dtype: torch.dtype = torch.float32, selection: str | None = None) -> Path:
    """The model's weights (in ``dtype``) and config, without optimiser or RNG state: what ships."""
    return atomic.write_bytes(path, weights_bytes(spec, model, config, epochs_done, dtype, selection))


def weights_bytes(spec: BaselineSpec, model: torch.nn.Module, config, epochs_done: int,
                  dtype: torch.dtype = torch.float32, selection: str | None = None) -> bytes:
    """The bytes of ``save_weights``' file."""
    payload = {"model": spec.name, "config": dataclasses.asdict(config), "epochs_done": epochs_done,
               "dtype": str(dtype).removeprefix("torch."),
               "weights": {k: v.detach().to(dtype).cpu() for k, v in model.state_dict().items()}}
    if selection:
        payload["selection"] = selection
    return atomic.torch_bytes(payload)


def load_model(spec: BaselineSpec, path: str | Path) -> tuple[torch.nn.Module, dict]:
    """A baseline from a shipped weights file, ``best.pt`` or ``checkpoint.pt``, in float32 for evaluation."""
    payload = load_payload(path, f"ganbench {spec.name} weights file", WEIGHTS_FIX, WEIGHTS_KEYS)
    if payload["model"] != spec.name:
        raise GanbenchError(f"{path} holds a {payload['model']} model, not a {spec.name}; {WEIGHTS_FIX}")
    try:
        config = spec.config_class(**payload["config"])
        model = spec.build(config, None)
        model.load_state_dict({k: v.float() for k, v in payload["weights"].items()})
    except (RuntimeError, TypeError, KeyError) as error:
        raise GanbenchError(f"{path} does not fit ganbench's {spec.name} ({type(error).__name__}); "
                            f"{WEIGHTS_FIX}") from None
    runs.check_finite_weights(model, path, WEIGHTS_FIX)
    model.eval()
    metadata = {key: payload.get(key) for key in ("config", "epochs_done", "selection", "dtype")}
    return model, metadata


def _save_checkpoint(path: Path, spec: BaselineSpec, state: RunState, config) -> None:
    atomic.write_bytes(path, atomic.torch_bytes({
        "model": spec.name, "config": dataclasses.asdict(config), "weights": state.model.state_dict(),
        "buffers": state.optimizer.state_dict(), "rng": state.rng.get_state(),
        "epochs_done": state.epochs_done, "log": state.log}))


def _new_state(spec: BaselineSpec, config, train_images: np.ndarray) -> RunState:
    torch.manual_seed(config.seed)  # initial weights
    model = spec.build(config, train_images)
    return RunState(model, spec.optimizer(model), torch.Generator().manual_seed(config.seed + 1))


def _read_checkpoint(spec: BaselineSpec, path: Path, required: tuple[str, ...] = CHECKPOINT_KEYS) -> dict:
    if not path.exists():
        raise GanbenchError(f"no checkpoint at {path}; drop --resume to start a new run there")
    payload = load_payload(path, f"ganbench {spec.name} training checkpoint", CHECKPOINT_FIX, ("model", *required))
    if payload["model"] != spec.name:
        raise GanbenchError(f"{path} is a {payload['model']} run, not {spec.name}; pass --model {payload['model']}")
    return payload


def _load_checkpoint(spec: BaselineSpec, path: Path, train_images: np.ndarray) -> tuple[RunState, object]:
    payload = _read_checkpoint(spec, path)
    try:
        config = spec.config_class(**payload["config"])
        state = _new_state(spec, config, train_images)
        state.model.load_state_dict(payload["weights"])
        state.optimizer.load_state_dict(payload["buffers"])
        state.rng.set_state(payload["rng"])
    except (RuntimeError, TypeError, KeyError) as error:
        raise GanbenchError(f"{path} does not hold a state of the {spec.name} trainer ({type(error).__name__}); "
                            f"{CHECKPOINT_FIX}") from None
    runs.check_finite_weights(state.model, path, CHECKPOINT_FIX)  # a damaged file, not a diverged epoch
    state.epochs_done, state.log = payload["epochs_done"], list(payload["log"])
    return state, config


def resolve_config(spec: BaselineSpec, out_dir: str | Path, resume: bool, **given):
    """Defaults overridden by ``given``; a resumed run keeps its stored config except ``epochs``."""
    if not resume:
        try:
            return spec.config_class(**given)
        except TypeError as error:
            raise GanbenchError(f"bad {spec.name} config: {error}") from None
    stored = spec.config_class(**_read_checkpoint(spec, Path(out_dir) / CHECKPOINT_NAME, ("config",))["config"])
    for name, value in given.items():
        if name != "epochs" and getattr(stored, name) != value:
            raise GanbenchError(f"{out_dir} was trained with {name}={getattr(stored, name)!r}, not {value!r}; "
                                "a resumed run keeps its config (only epochs may change)")
    return dataclasses.replace(stored, epochs=given.get("epochs", stored.epochs))


def _validate(spec: BaselineSpec, config) -> None:
    if config.epochs < 1:
        raise GanbenchError(f"bad {spec.name} config: epochs must be >= 1, got {config.epochs}")
    from ganbench.scoring.parzen import SMALLEST_SIGMA

    sigma = getattr(config, "monitor_sigma", None)
    if sigma is not None and not sigma >= SMALLEST_SIGMA:  # refused now, not after the first epoch
        raise GanbenchError(f"bad {spec.name} config: monitor_sigma must be >= {SMALLEST_SIGMA:.2g}, got {sigma}")
    if config.train_subset is not None and config.train_subset < config.batch_size:
        raise GanbenchError(f"bad {spec.name} config: train_subset must hold at least one batch "
                            f"({config.batch_size} images), got {config.train_subset}")


def train(spec: BaselineSpec, config, out_dir: str | Path, *, resume: bool = False, data=None,
          progress: bool = True, max_minutes: float | None = None) -> RunState:
    """Train (or continue) a baseline in ``out_dir``, checkpointing after every epoch.

    ``max_minutes`` stops after the first epoch that ends past that wall-clock budget; the
    run stays resumable.
    """
    from ganbench.data import load_mnist

    _validate(spec, config)
    runs.check_budget(max_minutes)
    session_start = time.perf_counter()
    out_dir = Path(out_dir)
    data = data if data is not None else load_mnist()
    checkpoint_path = out_dir / CHECKPOINT_NAME
    # Every training image once (GSN's are train + valid, shuffled: 188 MB), its first train_subset taken from it.
    every_image = spec.training_images(dataclasses.replace(config, train_subset=None), data)
    runs.check_subset(config.train_subset, len(every_image))
    runs.check_monitor_images(config.monitor_valid, len(data.valid_x))
    train_images = every_image[:config.train_subset] if config.train_subset else every_image
    if resume:
        state, stored = _load_checkpoint(spec, checkpoint_path, train_images)
        config = dataclasses.replace(stored, epochs=config.epochs)
        runs.check_resumed_epochs(out_dir, state.epochs_done, config.epochs)
        runs.warn_if_best_lost(out_dir / BEST_NAME, state.log, lambda path: _read_checkpoint(spec, path, WEIGHTS_KEYS))
        if state.log:
            runs.write_log(out_dir / LOG_NAME, state.log)  # the checkpoint's log is the run's
    elif checkpoint_path.exists():
        raise GanbenchError(f"{checkpoint_path} exists; add --resume to continue it, or choose another --out")
    else:
        state = _new_state(spec, config, train_images)
    images = torch.from_numpy(train_images)
    while state.epochs_done < config.epochs:
        started = time.perf_counter()
        row = {"epoch": state.epochs_done + 1, **spec.train_epoch(state, config, images)}
        state.epochs_done += 1
        row["seconds"] = time.perf_counter() - started
        row["parzen_valid"] = spec.monitor(state.model, config, data)
        best_before = max((earlier["parzen_valid"] for earlier in state.log if runs.selectable(earlier)),
                          default=-np.inf)
        state.log.append(row)
        # Model selection on validation only (test is never read here), among top-layer epochs (runs.selectable).
        if runs.selectable(row) and row["parzen_valid"] > best_before:
            save_weights(out_dir / BEST_NAME, spec, state.model, config, state.epochs_done,
                         selection=f"the highest per-epoch validation monitor of its run ({row['parzen_valid']:.1f} "
                                   f"nats at epoch {state.epochs_done})")
        _save_checkpoint(checkpoint_path, spec, state, config)
        runs.write_log(out_dir / LOG_NAME, state.log)
        if progress:
            shown = " ".join(f"{k} {v:.4g}" for k, v in row.items() if k != "epoch" and isinstance(v, float))
            tqdm.write(f"{spec.name} epoch {row['epoch']}: {shown}", file=sys.stderr)
        if max_minutes is not None and time.perf_counter() - session_start > 60 * max_minutes:
            if state.epochs_done < config.epochs:
                runs.stopped_for_time(out_dir, state.epochs_done, config.epochs, max_minutes, spec.name)
            break
    return state


def _first_layer_only(log_path: Path) -> bool:
    """Whether a stacked model's run log holds epochs, none of its top layer (no best epoch can be chosen yet)."""
    import pandas as pd

    try:
        log = pd.read_csv(log_path)
    except (OSError, ValueError):
        return False
    return "layer" in log.columns and not log.empty and runs.selectable_rows(log).empty


def export(spec: BaselineSpec, run: str | Path, out_dir: str | Path, best: bool = True) -> Path:
    """Ship a run: ``out_dir/<name>.pt`` in the spec's dtype and ``out_dir/<name>_train_log.csv``."""
    run, out_dir = Path(run), Path(out_dir)
    source = run / (BEST_NAME if best else CHECKPOINT_NAME)
    if not source.is_file():
        if best and _first_layer_only(run / LOG_NAME):
            raise GanbenchError(f"{run} has trained its first layer only, and a best epoch is chosen among the epochs "
                                "of its top layer: train the run on past its first-layer epochs (`ganbench train "
                                f"--model {spec.name} --resume --epochs N --out {run}`)")
        raise GanbenchError(f"no {source.name} in {run}; pass the --out folder of a `ganbench train --model {spec.name}` "
                            "run" + (" that logged its validation monitor (or drop --best)" if best else ""))
    model, metadata = load_model(spec, source)
    config = spec.config_class(**metadata["config"])
    epochs_done = _read_checkpoint(spec, run / CHECKPOINT_NAME, WEIGHTS_KEYS)["epochs_done"]
    log = runs.read_log(run / LOG_NAME, epochs_done)  # the run's epochs, each with its monitor
    if best:
        runs.check_best_is_logged_peak(log, run / LOG_NAME, source, metadata["epochs_done"])
    if not best and not runs.selectable(log.iloc[-1].to_dict()):
        print(f"ganbench: warning: the last epoch of {run} trained its first layer only: the exported {spec.name}'s "
              "top layer is untrained", file=sys.stderr)
    candidates = runs.selectable_rows(log)["epoch"]
    selection = (f"{metadata['selection']}, among epochs {int(candidates.min())}-{int(candidates.max())}" if best
                 else "the last epoch of its run")
    path = out_dir / f"{spec.name}.pt"
    weights = weights_bytes(spec, model, config, metadata["epochs_done"], dtype=spec.ship_dtype, selection=selection)
    # The weights and their log: both new or both old (a log that could not be written left new weights beside
    # the old log, or weights alone in a new folder).
    atomic.write_set({path: weights, out_dir / f"{spec.name}_{LOG_NAME}": (run / LOG_NAME).read_bytes()})
    return path
