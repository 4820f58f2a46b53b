"""Algorithm 1 of the paper with the authors' MNIST optimiser, resumable to the bit.

One iteration: k discriminator steps, then one generator step. With k = 1 (the
paper's choice) D and G are updated from the same minibatch and the same forward
pass of the dropped-out D, as the authors' AdversaryCost2 does. The generator
maximises log D(G(z)) (the non-saturating loss, end of Section 3) unless
``generator_loss="minimax"``.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ganbench import atomic, runs
from ganbench.devices import resolve_device
from ganbench.errors import GanbenchError
from ganbench.gan.checkpoints import load_payload
from ganbench.gan.models import Discriminator, Generator, sample_noise
from ganbench.gan.sampling import generate, save_generator
from ganbench.progress import progress_bar, progress_line
from ganbench.scoring import parzen

CHECKPOINT_NAME = "checkpoint.pt"
BEST_GENERATOR_NAME = "best_generator.pt"  # G of the epoch with the highest validation monitor
LOG_NAME = "train_log.csv"
CHECKPOINT_KEYS = ("config", "generator", "discriminator", "generator_optimizer", "discriminator_optimizer",
                   "data_rng", "torch_rng", "cuda_rng", "epochs_done", "updates_done", "log")
GENERATOR_LOSSES = ("non-saturating", "minimax")


@dataclass
class TrainConfig:
    epochs: int = 100                  # no stopping rule in the paper or mnist.yaml (docs/paper.md)
    batch_size: int = 100              # mnist.yaml batch_size
    learning_rate: float = 0.1         # mnist.yaml learning_rate
    lr_decay: float = 1.000004         # ExponentialDecay: lr / 1.000004 after every update
    min_lr: float = 1e-6               # ExponentialDecay min_lr
    initial_momentum: float = 0.5      # Momentum init_momentum
    final_momentum: float = 0.7        # MomentumAdjustor final_momentum
    momentum_start_epoch: int = 1      # MomentumAdjustor start
    momentum_saturate_epoch: int = 250  # MomentumAdjustor saturate
    discriminator_steps: int = 1       # k of Algorithm 1; the paper used k = 1
    generator_loss: str = "non-saturating"  # end of Section 3; "minimax" is Eq. 1 as written
    seed: int = 0
    train_subset: int | None = None    # first N training images (tests); None = all 50,000
    monitor_bank: int = 10_000         # samples in the per-epoch Parzen monitor bank
    monitor_valid: int = 1_000         # first 1,000 validation images, as parzen_ll.py
    monitor_sigma: float = 0.2         # fixed width for the monitor (inside the paper's grid)

    def validate(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not _has_type(value, field.type):
                raise GanbenchError(f"bad training config: {field.name} must be {field.type}, got {value!r}")
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            # As the --seed flag: torch's generators take seeds below 2^63, and the run uses seed + 2.
            (0 <= self.seed <= 2**63 - 3, "seed must be in 0..2^63 - 3"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            # Above float32's range torch's optimiser step overflows (a traceback, not a diverged run).
            (0 < self.learning_rate <= 1e30, "learning_rate must be > 0 and at most 1e30"),
            (self.lr_decay >= 1, "lr_decay must be >= 1 (the rate is divided by it)"),
            (self.min_lr >= 0, "min_lr must be >= 0"),
            (0 <= self.initial_momentum < 1 and 0 <= self.final_momentum < 1, "momentum must be in [0, 1)"),
            (self.momentum_saturate_epoch > self.momentum_start_epoch, "momentum_saturate_epoch must exceed its start"),
            (self.discriminator_steps >= 1, "discriminator_steps (k) must be >= 1"),
            (self.generator_loss in GENERATOR_LOSSES, f"generator_loss must be one of {GENERATOR_LOSSES}"),
            (self.train_subset is None or self.train_subset >= self.batch_size,
             "train_subset must hold at least one batch"),
            (self.monitor_bank >= 1 and self.monitor_valid >= 1, "monitor sizes must be >= 1"),
            # Checked now, not by the scorer after the first epoch has trained.
            (self.monitor_sigma >= parzen.SMALLEST_SIGMA, f"monitor_sigma must be >= {parzen.SMALLEST_SIGMA:.2g} "
             "(1/(2 sigma^2) overflows float64 below)"),
        ]
        for ok, message in checks:
            if not ok:
                raise GanbenchError(f"bad training config: {message}")


def _has_type(value, annotation: str) -> bool:
    # Annotations are strings here (``from __future__ import annotations``); bool is not a number.
    if isinstance(value, bool):
        return False
    accepted = {"int": (int,), "float": (int, float), "str": (str,), "int | None": (int, type(None))}[annotation]
    return isinstance(value, accepted)


def read_config_file(path: str | Path) -> dict:
    """TrainConfig fields from a JSON object, e.g. ``{"epochs": 300, "discriminator_steps": 2}``."""
    path = Path(path)
    if not path.is_file():
        raise GanbenchError(f"no training config at {path}; write a JSON object of TrainConfig fields there")
    try:
        values = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise GanbenchError(f"{path} is not JSON ({error}); write a JSON object of TrainConfig fields") from None
    if not isinstance(values, dict):
        raise GanbenchError(f"{path} holds a JSON {type(values).__name__}; write an object of TrainConfig fields")
    known = [field.name for field in dataclasses.fields(TrainConfig)]
    unknown = [key for key in values if key not in known]
    if unknown:
        raise GanbenchError(f"{path}: {unknown[0]!r} is not a TrainConfig field; the fields are {', '.join(known)}")
    return values


def resolve_config(out_dir: str | Path, resume: bool, config_file: str | Path | None = None,
                   **overrides) -> TrainConfig:
    """The config one `ganbench train` call means: defaults, then the config file, then the flags given.

    A resumed run keeps the config stored in its checkpoint, so that it ends as an
    uninterrupted run would; only ``epochs`` may change. A flag or file that asks for
    anything else is an error rather than silently ignored.
    """
    given = {**(read_config_file(config_file) if config_file else {}), **overrides}
    if not resume:
        return TrainConfig(**given)
    payload = read_checkpoint(Path(out_dir) / CHECKPOINT_NAME, ("config",))
    if payload.get("model", "gan") != "gan":  # a baseline's run (ganbench.baselines.training) resumed as the GAN
        raise GanbenchError(f"{out_dir} holds a {payload['model']} run, not the GAN's; add --model {payload['model']} "
                            f"to resume it")
    try:
        stored = TrainConfig(**payload["config"])
    except TypeError as error:
        raise GanbenchError(f"{out_dir} does not hold a run of this trainer ({error}); point --out at a GAN run, "
                            "or add the --model it was trained with") from None
    for name, value in given.items():
        if name != "epochs" and getattr(stored, name) != value:
            raise GanbenchError(f"{out_dir} was trained with {name}={getattr(stored, name)!r}, not {value!r}; "
                                "a resumed run keeps its config (only epochs may change): drop that setting "
                                "or start a new run in another --out")
    return resumed_config(stored, given.get("epochs", stored.epochs))


def resumed_config(stored: TrainConfig, epochs: int) -> TrainConfig:
    """A resumed run keeps the config stored in its checkpoint: only its length may change."""
    return dataclasses.replace(stored, epochs=epochs)


def best_epoch_selection(monitor: float, config: dict, epochs_run: int | None = None) -> str:
    """How a best-by-monitor generator was chosen: while training (so far) or over a finished run."""
    among = f"among epochs 1-{epochs_run} of its run" if epochs_run else "of its run so far"
    return (f"the highest per-epoch validation Parzen monitor {among} ({monitor:.1f} nats at sigma "
            f"{config['monitor_sigma']}, first {config['monitor_valid']} validation images)")


def learning_rate_at(config: TrainConfig, updates_done: int) -> float:
    """pylearn2 ExponentialDecay: base / decay^t, floored at min_lr."""
    return max(config.min_lr, config.learning_rate / config.lr_decay ** updates_done)


def momentum_at(config: TrainConfig, epochs_done: int) -> float:
    """pylearn2 MomentumAdjustor: linear from the initial value at ``start`` to the final at ``saturate``."""
    span = config.momentum_saturate_epoch - config.momentum_start_epoch
    progress = min(max((epochs_done - config.momentum_start_epoch) / span, 0.0), 1.0)
    return config.initial_momentum + (config.final_momentum - config.initial_momentum) * progress


class MomentumSGD:
    """The authors' rule: inc = momentum * inc - lr * grad; param += inc."""

    def __init__(self, parameters):
        self.parameters = list(parameters)
        self.increments = [torch.zeros_like(p) for p in self.parameters]

    @torch.no_grad()
    def step(self, learning_rate: float, momentum: float) -> None:
        for parameter, increment in zip(self.parameters, self.increments):
            increment.mul_(momentum).add_(parameter.grad, alpha=-learning_rate)
            parameter.add_(increment)

    def state_dict(self):
        return [increment.clone() for increment in self.increments]

    def load_state_dict(self, increments):
        for mine, saved in zip(self.increments, increments):
            mine.copy_(saved)


@dataclass
class TrainState:
    generator: Generator
    discriminator: Discriminator
    generator_optimizer: MomentumSGD
    discriminator_optimizer: MomentumSGD
    data_rng: torch.Generator      # minibatch order and noise
    epochs_done: int = 0
    updates_done: int = 0
    log: list = dataclasses.field(default_factory=list)


def _discriminator_loss(real_logits, fake_logits):
    # 0.5 * (BCE(D(x), 1) + BCE(D(G(z)), 0)), on logits for stability.
    return 0.5 * (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
                  + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def _generator_loss(fake_logits, kind: str):
    if kind == "non-saturating":  # maximise log D(G(z))
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    return -F.softplus(fake_logits).mean()  # minimise log(1 - D(G(z))) = -softplus(logit)


def new_state(config: TrainConfig, train_images: np.ndarray, device: torch.device) -> TrainState:
    torch.manual_seed(config.seed)  # weights and dropout
    generator, discriminator = Generator(), Discriminator()
    generator.init_output_bias(train_images.mean(axis=0))
    generator.to(device)
    discriminator.to(device)
    data_rng = torch.Generator().manual_seed(config.seed + 1)
    return TrainState(generator, discriminator, MomentumSGD(generator.parameters()),
                      MomentumSGD(discriminator.parameters()), data_rng)


def train_epoch(state: TrainState, config: TrainConfig, images: torch.Tensor, progress: bool = True) -> dict:
    """One pass over the training images (Algorithm 1, k D steps per G step)."""
    generator, discriminator = state.generator, state.discriminator
    generator.train()
    discriminator.train()
    momentum = momentum_at(config, state.epochs_done)
    order = torch.randperm(len(images), generator=state.data_rng)
    batches = [order[i:i + config.batch_size] for i in range(0, len(order) - config.batch_size + 1, config.batch_size)]
    d_losses, g_losses = [], []
    bar = progress_bar(batches, enabled=progress, desc=f"epoch {state.epochs_done + 1}", leave=False, mininterval=1.0)
    for batch_number, batch in enumerate(bar):
        real = images[batch]
        noise = sample_noise(len(batch), state.data_rng).to(images.device)
        fake = generator(noise)
        real_logits = discriminator(real)
        fake_logits = discriminator(fake)
        d_loss = _discriminator_loss(real_logits, fake_logits)
        learning_rate = learning_rate_at(config, state.updates_done)
        generator_turn = (batch_number + 1) % config.discriminator_steps == 0
        d_grads = torch.autograd.grad(d_loss, list(discriminator.parameters()), retain_graph=generator_turn)
        if generator_turn:  # the same forward pass gives G's gradient (AdversaryCost2)
            g_loss = _generator_loss(fake_logits, config.generator_loss)
            g_grads = torch.autograd.grad(g_loss, list(generator.parameters()))
            for parameter, grad in zip(generator.parameters(), g_grads):
                parameter.grad = grad
            state.generator_optimizer.step(learning_rate, momentum)
            g_losses.append(g_loss.item())
        for parameter, grad in zip(discriminator.parameters(), d_grads):
            parameter.grad = grad
        state.discriminator_optimizer.step(learning_rate, momentum)
        state.updates_done += 1
        d_losses.append(d_loss.item())
        if batch_number % 50 == 0:
            bar.set_postfix(d_loss=f"{d_losses[-1]:.3f}", g_loss=f"{g_losses[-1] if g_losses else float('nan'):.3f}")
    state.epochs_done += 1
    return {"d_loss": float(np.mean(d_losses)), "g_loss": float(np.mean(g_losses)) if g_losses else float("nan"),
            "learning_rate": learning_rate, "momentum": momentum}


def check_batches(config: TrainConfig, images: int) -> None:
    """An epoch is the whole batches of the training images, and k (discriminator_steps) counts D steps within
    one (Algorithm 1's inner loop, restarted each epoch): a batch larger than the images gave no batch at all (a
    traceback), and k above an epoch's batches left G untrained, with no error."""
    batches = images // config.batch_size
    if batches < 1:
        raise GanbenchError(f"batch_size {config.batch_size} exceeds the {images:,} training images; pass at most "
                            f"{images}")
    if config.discriminator_steps > batches:
        raise GanbenchError(f"discriminator_steps (k) {config.discriminator_steps} exceeds the {batches} batches of an "
                            "epoch: G would never be updated (k counts D steps within an epoch); pass k <= "
                            f"{batches}, or train on more images")


def check_training_converged(state: TrainState, epoch: int) -> None:
    """A one-line error when training diverged (a weight of G or D is NaN or inf), before the monitor would score
    G's NaN samples and blame "the bank". The checkpoint of the last good epoch stays as it was."""
    for name, model in (("generator", state.generator), ("discriminator", state.discriminator)):
        if not all(bool(torch.isfinite(parameter).all()) for parameter in model.parameters()):
            raise GanbenchError(f"training diverged in epoch {epoch}: the {name}'s weights became NaN or inf; lower "
                                "the learning rate (the run's last finished epoch is kept, but resuming repeats this)")


def parzen_monitor(state: TrainState, config: TrainConfig, valid_images: np.ndarray, device) -> float:
    bank = generate(state.generator, config.monitor_bank, seed=config.seed + 2, device=device)
    scores = parzen.log_likelihood(valid_images[:config.monitor_valid], bank, [config.monitor_sigma],
                                   backend="torch", device=device)
    return float(scores.mean())


def save_checkpoint(path: Path, state: TrainState, config: TrainConfig) -> None:
    payload = {
        "config": dataclasses.asdict(config),
        "generator": state.generator.state_dict(),
        "discriminator": state.discriminator.state_dict(),
        "generator_optimizer": state.generator_optimizer.state_dict(),
        "discriminator_optimizer": state.discriminator_optimizer.state_dict(),
        "data_rng": state.data_rng.get_state(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "epochs_done": state.epochs_done,
        "updates_done": state.updates_done,
        "log": state.log,
    }
    atomic.write_bytes(path, atomic.torch_bytes(payload))


def read_checkpoint(path: Path, required: tuple[str, ...] = CHECKPOINT_KEYS) -> dict:
    """The raw payload of a run's checkpoint.pt, or a one-line error that says what to do."""
    if not path.exists():
        raise GanbenchError(f"no checkpoint at {path}; drop --resume to start a new run there")
    return load_payload(path, "ganbench training checkpoint",
                        "delete it to start over, or point --out at another run", required)


def load_checkpoint(path: Path, train_images: np.ndarray, device: torch.device) -> tuple[TrainState, TrainConfig]:
    payload = read_checkpoint(path)
    try:
        # RNG states must stay CPU tensors; the models move to ``device`` in new_state.
        config = TrainConfig(**payload["config"])
        state = new_state(config, train_images, device)
        state.generator.load_state_dict(payload["generator"])
        state.discriminator.load_state_dict(payload["discriminator"])
        state.generator_optimizer.load_state_dict(payload["generator_optimizer"])
        state.discriminator_optimizer.load_state_dict(payload["discriminator_optimizer"])
        state.data_rng.set_state(payload["data_rng"])
        torch.set_rng_state(payload["torch_rng"])
        if payload["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(payload["cuda_rng"])
        state.epochs_done, state.updates_done = payload["epochs_done"], payload["updates_done"]
        state.log = list(payload["log"])
    except (RuntimeError, TypeError, ValueError) as error:
        raise GanbenchError(f"{path} does not hold a state of this trainer ({type(error).__name__}); "
                            "delete it to start over, or point --out at another run") from None
    # A checkpoint is written only after an epoch whose weights stayed finite (check_training_converged): NaN here
    # is a damaged file, said before an epoch is trained from it and blamed on the learning rate.
    for model in (state.generator, state.discriminator):
        runs.check_finite_weights(model, path, "delete it to start over, or point --out at another run")
    return state, config


def train(config: TrainConfig, out_dir: str | Path, *, resume: bool = False, device="cpu",
          data=None, progress: bool = True, max_minutes: float | None = None) -> TrainState:
    """Train (or continue) a run in ``out_dir``: a checkpoint and the log are written after every epoch.

    ``max_minutes`` stops after the first epoch that ends past that wall-clock budget
    (the run stays resumable), for machines lent for a fixed time.
    """
    session_start = time.perf_counter()
    from ganbench.data import load_mnist

    out_dir = Path(out_dir)
    device = resolve_device(device, default="cpu")
    runs.check_budget(max_minutes)
    data = data if data is not None else load_mnist()
    checkpoint_path = out_dir / CHECKPOINT_NAME
    if resume:
        state, stored = load_checkpoint(checkpoint_path, data.train_x, device)
        config = resumed_config(stored, config.epochs)
        runs.check_resumed_epochs(out_dir, state.epochs_done, config.epochs)
        # Read as a file only: building a Generator would draw its initial weights from torch's global RNG, which
        # the checkpoint has just restored for the next epoch.
        runs.warn_if_best_lost(out_dir / BEST_GENERATOR_NAME, state.log,
                               lambda path: load_payload(path, "ganbench generator", "", ("generator",)))
        if state.log:
            runs.write_log(out_dir / LOG_NAME, state.log)  # the checkpoint's log is the run's
    else:
        if checkpoint_path.exists():
            raise GanbenchError(f"{checkpoint_path} exists; add --resume to continue it, or choose another --out")
        state = None
    config.validate()
    runs.check_subset(config.train_subset, len(data.train_x))
    runs.check_monitor_images(config.monitor_valid, len(data.valid_x))
    train_images = data.train_x[:config.train_subset] if config.train_subset else data.train_x
    check_batches(config, len(train_images))
    if state is None:
        state = new_state(config, train_images, device)
    images = torch.from_numpy(train_images).to(device)
    while state.epochs_done < config.epochs:
        started = time.perf_counter()
        row = {"epoch": state.epochs_done + 1, **train_epoch(state, config, images, progress)}
        row["seconds"] = time.perf_counter() - started
        check_training_converged(state, row["epoch"])
        row["parzen_valid"] = parzen_monitor(state, config, data.valid_x, device)
        best_before = max((earlier["parzen_valid"] for earlier in state.log), default=-np.inf)
        state.log.append(row)
        if row["parzen_valid"] > best_before:
            # Model selection on the validation monitor only, as the authors' per-epoch saves
            # with monitor_ll allowed; the test split is never looked at here.
            save_generator(out_dir / BEST_GENERATOR_NAME, state.generator.state_dict(),
                           dataclasses.asdict(config), state.epochs_done, state.updates_done,
                           selection=best_epoch_selection(row["parzen_valid"], dataclasses.asdict(config)))
        save_checkpoint(checkpoint_path, state, config)
        runs.write_log(out_dir / LOG_NAME, state.log)
        out_of_time = max_minutes is not None and time.perf_counter() - session_start > 60 * max_minutes
        if progress:
            progress_line(f"epoch {row['epoch']}: d_loss {row['d_loss']:.4f} g_loss {row['g_loss']:.4f} "
                          f"parzen@{config.monitor_sigma} {row['parzen_valid']:.1f} ({row['seconds']:.0f}s)")
        if out_of_time:
            if state.epochs_done < config.epochs:
                runs.stopped_for_time(out_dir, state.epochs_done, config.epochs, max_minutes)
            break
    return state
