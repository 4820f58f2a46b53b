"""Deep GSN: the Table 1 row of Bengio, Thibodeau-Laufer, Alain, Yosinski (ICML 2014), 214 ± 1.1 nats.

The model and recipe of the authors' public code (``run_gsn.py`` / ``model.py`` of yaoli/GSN),
re-implemented in PyTorch (docs/baselines.md lists every setting and where it comes from):

- layers x (784) - h1 (1500) - h2 (1500); tied weights, the down pass uses W^T; tanh hidden
  units, sigmoid visible units; weights uniform in ±sqrt(6 / (fan_in + fan_out)), biases zero;
- one update of the network: odd layers first, then even layers:
  h1 = tanh(x W1 + h2 W2^T + b1)                  (no noise on h1: ``noiseless_h1``)
  p = sigmoid(h1 W1^T + b0);  x = salt_and_pepper(Bernoulli(p), 0.4)
  h2 = tanh(h1 W2 + b2 + n) + n',  n, n' ~ N(0, 2^2)
- training: walkback of 4 updates from x = salt_and_pepper(image), hidden units at zero; loss =
  sum over the 4 means p of the pixel-mean cross-entropy against the real-valued image; SGD
  lr 0.25 with averaging momentum 0.5, lr x 0.995 per epoch, batch 100, on train + valid
  (60,000 images, shuffled once, batches in the same order every epoch), 1000 epochs;
- the authors' Parzen bank: one chain from salt_and_pepper(test_X[0]), 10,000 consecutive
  means p(x|h), test_X[0] itself first; sigma fixed at 0.20.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ganbench.baselines.training import BaselineSpec, MomentumBuffers, RunState, bernoulli
from ganbench.progress import progress_bar
from ganbench.scoring import parzen

AUTHORS_SIGMA = 0.20          # likelihood_estimation_parzen.py is run at one fixed width
AUTHORS_BANK = 10_000         # consecutive means of one chain


@dataclass
class GSNConfig:
    """run_gsn.py defaults for MNIST (yaoli/GSN); ``epochs`` is the authors' n_epoch."""
    hidden: int = 1500                  # hidden_size, both layers (K = 2)
    walkback: int = 4                   # N: updates of the network per training example
    salt_and_pepper: float = 0.4        # input_salt_and_pepper
    hidden_noise: float = 2.0           # hidden_add_noise_sigma, before and after the top activation
    learning_rate: float = 0.25
    momentum: float = 0.5               # averaging momentum: buf = 0.5 buf + 0.5 g
    annealing: float = 0.995            # lr x annealing after every epoch
    batch_size: int = 100
    epochs: int = 1000                  # n_epoch
    train_on_valid: bool = True         # the authors train on train + valid (60,000 images)
    seed: int = 0
    train_subset: int | None = None     # first N training images (tests)
    monitor_chains: int = 10            # validation monitor: parallel chains from training images ...
    monitor_steps: int = 200            # ... this many means each (2,000 in all) ...
    monitor_valid: int = 1_000          # ... scored on the first 1,000 validation images
    monitor_sigma: float = AUTHORS_SIGMA


class DeepGSN(torch.nn.Module):
    def __init__(self, visible: int = 784, hidden: int = 1500):
        super().__init__()
        self.w1 = torch.nn.Parameter(_uniform_init(visible, hidden))
        self.w2 = torch.nn.Parameter(_uniform_init(hidden, hidden))
        self.b0 = torch.nn.Parameter(torch.zeros(visible))
        self.b1 = torch.nn.Parameter(torch.zeros(hidden))
        self.b2 = torch.nn.Parameter(torch.zeros(hidden))

    def update_odd(self, x, h2, product=torch.matmul):
        """h1 from both neighbours (no noise on h1); ``h2=None`` is the chain's first update, from zeros."""
        pre = product(x, self.w1) + self.b1
        return torch.tanh(pre if h2 is None else pre + product(h2, self.w2.T))

    def visible_logits(self, h1, product=torch.matmul):
        return product(h1, self.w1.T) + self.b0

    def update_top(self, h1, noise: float, rng: torch.Generator, product=torch.matmul):
        """h2 = tanh(h1 W2 + b2 + n) + n': Gaussian noise before and after the activation."""
        pre = product(h1, self.w2) + self.b2
        pre = pre + noise * torch.randn(pre.shape, generator=rng)
        return torch.tanh(pre) + noise * torch.randn(pre.shape, generator=rng)

    def step(self, x, h2, config: GSNConfig, rng: torch.Generator, last: bool = False, product=torch.matmul):
        """One update (odd layers, then even layers): the visible logits, the sampled x and the new h2.

        ``last=True`` stops at the logits: the walkback's final x and h2 feed nothing. ``product``
        multiplies activations by weights (``blas_product`` when sampling).
        """
        h1 = self.update_odd(x, h2, product)
        logits = self.visible_logits(h1, product)
        if last:
            return logits, None, None
        with torch.no_grad():  # the sampled input carries no gradient, as Theano's binomial
            x = salt_and_pepper(bernoulli(torch.sigmoid(logits), rng), config.salt_and_pepper, rng)
        return logits, x, self.update_top(h1, config.hidden_noise, rng, product)


def blas_product(activations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """activations @ weights through NumPy's BLAS, for one chain's sampling (no gradient): float32 either
    way, only the order of the sums differs. On the project's 2-core AMD EPYC NumPy's OpenBLAS runs a
    matrix-vector product on both cores where torch's runs on one: a step of the authors' single chain
    0.43 against 0.81 ms. Not for batches: there torch's elementwise operations run on its OpenMP threads,
    which keep spinning while OpenBLAS's threads want the same cores (100 chains took 3x longer); for one
    chain the same contention is kept out by ``one_torch_thread``."""
    return torch.from_numpy(np.matmul(activations.numpy(), weights.detach().numpy()))


@contextlib.contextmanager
def one_torch_thread():
    """torch's own operations on one thread while a single chain's products run on OpenBLAS's threads.

    A chain's elementwise operations act on one row (1,500 values) and gain nothing from threads, but once
    torch's thread count has been set (``torch.set_num_threads(2)`` in a user's script, even to the count it
    had) its OpenMP threads took the cores from OpenBLAS's: a step of the authors' chain went from 0.47 to 16.6
    ms on a 2-core AMD EPYC (the bank of 10,000 from 4.7 s to minutes); on one thread, 0.39 ms. Threads change
    no value here: every torch operation of a step is elementwise or a draw of the serial generator."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _uniform_init(fan_in: int, fan_out: int) -> torch.Tensor:
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return torch.empty(fan_in, fan_out).uniform_(-bound, bound)


def salt_and_pepper(x: torch.Tensor, rate: float, rng: torch.Generator) -> torch.Tensor:
    """Each pixel kept with probability 1 - rate, else replaced by a fair coin (0 or 1).

    One uniform u per pixel: u < rate replaces the pixel, by 1 when u < rate / 2 (the same law
    as the authors' two binomial draws, at half the random numbers).
    """
    u = torch.rand(x.shape, generator=rng)
    return torch.where(u < rate, (u < rate / 2).to(x.dtype), x)


def walkback_logits(model: DeepGSN, images: torch.Tensor, config: GSNConfig, rng: torch.Generator) -> list:
    """The visible logits of the ``walkback`` updates from salt_and_pepper(images), hiddens at zero."""
    x, h2 = salt_and_pepper(images, config.salt_and_pepper, rng), None
    chain = []
    for step in range(config.walkback):
        logits, x, h2 = model.step(x, h2, config, rng, last=step == config.walkback - 1)
        chain.append(logits)
    return chain


def walkback_loss(model: DeepGSN, images: torch.Tensor, config: GSNConfig, rng: torch.Generator) -> torch.Tensor:
    """Sum over the walkback's reconstructions of the pixel-mean cross-entropy against the real image."""
    return sum(F.binary_cross_entropy_with_logits(logits, images) for logits in walkback_logits(model, images, config, rng))


def learning_rate_at(config: GSNConfig, epochs_done: int) -> float:
    return config.learning_rate * config.annealing ** epochs_done


def train_epoch(state: RunState, config: GSNConfig, images: torch.Tensor) -> dict:
    """One pass in the authors' fixed batch order (the data were shuffled once, before training)."""
    learning_rate = learning_rate_at(config, state.epochs_done)
    parameters = list(state.model.parameters())
    losses = []
    for start in range(0, len(images) - config.batch_size + 1, config.batch_size):
        loss = walkback_loss(state.model, images[start:start + config.batch_size], config, state.rng)
        state.optimizer.step(torch.autograd.grad(loss, parameters), learning_rate, config.momentum)
        losses.append(loss.item())
    return {"walkback_loss": float(np.mean(losses)), "learning_rate": learning_rate}


@torch.no_grad()
def chain_means(model: DeepGSN, starts: np.ndarray, steps: int, config: GSNConfig, rng: torch.Generator,
                first_kept: int = 0, every: int = 1) -> np.ndarray:
    """The means p(x|h) of parallel chains from salt_and_pepper(starts) at updates first_kept,
    first_kept + every, ... below ``steps``: (kept updates, len(starts), 784). Every update runs
    (the random stream is the same whichever are kept); only the kept ones' means are stored."""
    x, h2 = salt_and_pepper(torch.as_tensor(starts, dtype=torch.float32), config.salt_and_pepper, rng), None
    kept = range(first_kept, steps, every)
    means = np.empty((len(kept), len(starts), x.shape[1]), dtype=np.float32)
    single = len(starts) == 1
    with one_torch_thread() if single else contextlib.nullcontext():
        for index in progress_bar(range(steps), desc="Deep GSN chains", leave=False):  # on a terminal only
            logits, x, h2 = model.step(x, h2, config, rng, product=blas_product if single else torch.matmul)
            if index >= first_kept and (index - first_kept) % every == 0:
                means[(index - first_kept) // every] = torch.sigmoid(logits).numpy()
    return means


def authors_bank(model: DeepGSN, start_image: np.ndarray, seed: int = 0, size: int = AUTHORS_BANK,
                 config: GSNConfig | None = None) -> np.ndarray:
    """The authors' Parzen bank: ``start_image`` itself, then the next size - 1 means of ONE chain from it.

    In the published protocol ``start_image`` is test_X[0], so one test image is in its own bank.
    """
    config = config or GSNConfig()
    rng = torch.Generator().manual_seed(seed)
    means = chain_means(model, np.asarray(start_image, dtype=np.float32)[None], size - 1, config, rng)[:, 0]
    return np.concatenate([np.asarray(start_image, dtype=np.float32)[None], means])


# Independent samples for the GAN paper's protocol: CHAINS parallel chains, each from a
# different training image (as the authors' chain starts from a data image, but never a test
# image), BURN_IN updates discarded, then one mean every THINNING updates of each chain.
# Chains from uniform-coin images instead can fall into an inverted-digit mode (white
# background) that the authors' data-started chains never visit (docs/baselines.md).
CHAINS = 100
BURN_IN = 100
THINNING = 5


def sample(model: DeepGSN, count: int, seed: int, config: GSNConfig | None = None,
           train_images: np.ndarray | None = None) -> np.ndarray:
    """``count`` means p(x|h): CHAINS chains from random training images, BURN_IN updates discarded,
    then every THINNING-th. ``train_images`` defaults to MNIST's training split."""
    config = config or GSNConfig()
    if train_images is None:
        from ganbench.data import load_mnist

        train_images = load_mnist().train_x
    chains = min(CHAINS, count)
    per_chain = -(-count // chains)
    starts = train_images[np.random.default_rng(seed).choice(len(train_images), size=chains, replace=False)]
    kept = chain_means(model, starts, BURN_IN + per_chain * THINNING, config, torch.Generator().manual_seed(seed),
                       first_kept=BURN_IN + THINNING - 1, every=THINNING)   # (per_chain, chains, 784)
    return np.ascontiguousarray(kept.reshape(-1, kept.shape[-1])[:count])


def monitor(model: DeepGSN, config: GSNConfig, data) -> float:
    """Parzen at the authors' fixed sigma on the first validation images, from short chains
    started at the first training images (the walkback's RNG is never touched)."""
    rng = torch.Generator().manual_seed(config.seed + 2)
    bank = chain_means(model, data.train_x[:config.monitor_chains], config.monitor_steps, config, rng)
    bank = bank.reshape(-1, bank.shape[-1])
    scores = parzen.log_likelihood(data.valid_x[:config.monitor_valid], bank, [config.monitor_sigma], backend="torch")
    return float(scores.mean())


def training_images(config: GSNConfig, data) -> np.ndarray:
    """train (+ valid, as the authors), shuffled once with a seeded RNG; the first ``train_subset``."""
    images = np.concatenate([data.train_x, data.valid_x]) if config.train_on_valid else data.train_x
    images = images[np.random.default_rng(config.seed).permutation(len(images))]
    return np.ascontiguousarray(images[:config.train_subset] if config.train_subset else images)


SPEC = BaselineSpec(
    name="gsn", title="Deep GSN", config_class=GSNConfig,
    build=lambda config, _images: DeepGSN(hidden=config.hidden),
    optimizer=lambda model: MomentumBuffers(model.parameters(), averaging=True),
    training_images=training_images, train_epoch=train_epoch, monitor=monitor,
    ship_dtype=torch.float16,  # 3.4 M weights: 6.9 MB in float16 instead of 13.7 MB
)
