"""Stacked CAE-2: the Table 1 row of Bengio, Mesnil, Dauphin, Rifai (ICML 2013), 121 ± 1.6 nats.

That paper does not give the layer sizes or the schedule of its stacked contractive
auto-encoder, so ganbench takes a standard, documented setup (docs/baselines.md):

- two tied-weight sigmoid CAEs (Rifai et al. 2011), 784-500-500, trained greedily, each on
  squared reconstruction error + lambda ||J||_F^2, J the Jacobian of its encoder;
- sampling (Rifai et al. 2012, "A generative process for sampling contractive
  auto-encoders"), run at the top layer as Bengio et al. 2013 sample in the deep
  representation: h2 = f2(h1); h2 <- h2 + J J^T alpha, alpha ~ N(0, s^2 I), J = dh2/dh1;
  h1 = g2(h2); the sample is the decoded mean x = g1(h1).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ganbench.baselines.layers import TiedSigmoidLayer
from ganbench.baselines.training import (
    BaselineSpec,
    MomentumBuffers,
    RunState,
    SampledRunConfig,
    first_training_images,
    sample_monitor,
)
from ganbench.progress import progress_bar


@dataclass
class CAEConfig(SampledRunConfig):
    """A standard 2-layer stacked CAE (the source gives no sizes or schedule; see the module doc)."""
    hidden: tuple[int, int] = (500, 500)
    layer1_epochs: int = 10             # epochs of the first CAE; the rest train the second
    epochs: int = 20
    contraction: float = 0.1            # lambda of ||J||_F^2
    learning_rate: float = 0.01
    momentum: float = 0.9


class CAE(TiedSigmoidLayer):
    """Tied weights: h = sigmoid(x W + c), reconstruction sigmoid(h W^T + b)."""

    def __init__(self, visible: int, hidden: int):
        bound = 4 * (6 / (visible + hidden)) ** 0.5  # Glorot's sigmoid range
        super().__init__(torch.empty(visible, hidden).uniform_(-bound, bound))

    encode = TiedSigmoidLayer.hidden_mean
    decode = TiedSigmoidLayer.visible_mean

    def loss(self, x, contraction: float) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean over rows of the squared error and of ||J||_F^2 = sum_j (h_j (1 - h_j))^2 sum_i W_ij^2."""
        h = self.encode(x)
        error = ((self.decode(h) - x) ** 2).sum(1).mean()
        jacobian_norm = ((h * (1 - h)) ** 2 @ (self.weight ** 2).sum(0)).mean()
        return error + contraction * jacobian_norm, error

    def jacobian_step(self, h, alpha):
        """J J^T alpha at the code h = encode(x), J = dh/dx = diag(h (1 - h)) W^T, without forming J."""
        slope = h * (1 - h)
        return slope * ((slope * alpha) @ self.weight.T @ self.weight)


class StackedCAE(torch.nn.Module):
    def __init__(self, visible: int = 784, hidden: tuple[int, int] = (500, 500)):
        super().__init__()
        self.bottom = CAE(visible, hidden[0])
        self.top = CAE(hidden[0], hidden[1])


def train_epoch(state: RunState, config: CAEConfig, images: torch.Tensor) -> dict:
    """One epoch of the first CAE or, after ``layer1_epochs``, of the second on the first's codes."""
    model, rng = state.model, state.rng
    first_layer = state.epochs_done < config.layer1_epochs
    layer = model.bottom if first_layer else model.top
    order = torch.randperm(len(images), generator=rng)
    losses, errors = [], []
    for start in range(0, len(images) - config.batch_size + 1, config.batch_size):
        batch = images[order[start:start + config.batch_size]]
        if not first_layer:
            with torch.no_grad():
                batch = model.bottom.encode(batch)
        loss, error = layer.loss(batch, config.contraction)
        grads = list(torch.autograd.grad(loss, list(layer.parameters())))
        frozen = [None] * 3  # the other layer does not move (greedy layer-wise training)
        state.optimizer.step(grads + frozen if first_layer else frozen + grads, config.learning_rate, config.momentum)
        losses.append(loss.item())
        errors.append(error.item())
    return {"layer": 1 if first_layer else 2, "loss": float(np.mean(losses)),
            "reconstruction_error": float(np.mean(errors))}


@torch.no_grad()
def sampling_step(model: StackedCAE, h1: torch.Tensor, noise: float, rng: torch.Generator) -> torch.Tensor:
    """One step of Rifai et al. (2012) in the top CAE: h2 + J J^T alpha, decoded back to h1."""
    h2 = model.top.encode(h1)
    alpha = noise * torch.randn(h2.shape, generator=rng)
    return model.top.decode(h2 + model.top.jacobian_step(h2, alpha))


# Independent samples for the GAN paper's protocol: CHAINS parallel chains from the codes of
# uniform-noise images (no data image), BURN_IN steps discarded, then one every THINNING steps.
# SAMPLING_NOISE is s, the std of alpha in the Jacobian step: a setting of the sampler, not of
# training, chosen by the validation log-likelihood of the shipped weights (docs/baselines.md).
CHAINS = 1_000
BURN_IN = 100
THINNING = 10
SAMPLING_NOISE = 0.5


@torch.no_grad()
def sample(model: StackedCAE, count: int, seed: int, config: CAEConfig | None = None,
           noise: float = SAMPLING_NOISE) -> np.ndarray:
    rng = torch.Generator().manual_seed(seed)
    chains = min(CHAINS, count)
    per_chain = -(-count // chains)
    h1 = model.bottom.encode(torch.rand((chains, model.bottom.weight.shape[0]), generator=rng))
    kept = []
    for step in progress_bar(range(BURN_IN + per_chain * THINNING), desc="Stacked CAE chains", leave=False):
        h1 = sampling_step(model, h1, noise, rng)
        if step >= BURN_IN and (step - BURN_IN + 1) % THINNING == 0:
            kept.append(model.bottom.decode(h1))
    return torch.cat(kept)[:count].numpy()


SPEC = BaselineSpec(
    name="cae", title="Stacked CAE", config_class=CAEConfig,
    build=lambda config, _images: StackedCAE(hidden=tuple(config.hidden)),
    optimizer=lambda model: MomentumBuffers(model.parameters(), averaging=False),
    training_images=first_training_images, train_epoch=train_epoch, monitor=sample_monitor(sample),
)
