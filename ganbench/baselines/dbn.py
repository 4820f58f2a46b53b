"""DBN-2: the Table 1 row of Bengio, Mesnil, Dauphin, Rifai (ICML 2013), 138 ± 2 nats.

That paper does not give the layer sizes or the training schedule of its DBN, so ganbench
takes a standard, documented setup (docs/baselines.md) in the style of Hinton, Osindero and
Teh (2006) and Hinton's practical guide (2010):

- 784-500-500, two binary RBMs trained greedily: the first with CD-1 on the pixel
  intensities (read as probabilities), the second with persistent CD-1 (Tieleman 2008) on
  the first layer's mean activations; SGD with momentum (0.5 then 0.9 in the first layer, 0.5
  in the top one), weight decay 2e-4;
- sampling: Gibbs chains in the top RBM (h1 <-> h2) started at the codes of training images,
  then one mean-field pass down, x = sigmoid(h1 W1^T + b0), the mean image as the sample (as
  the mean p(x|h) is the GSN's).
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
    bernoulli,
    first_training_images,
    sample_monitor,
)
from ganbench.progress import progress_bar


@dataclass
class DBNConfig(SampledRunConfig):
    """A standard 2-layer DBN (the source gives no sizes or schedule; see the module doc)."""
    hidden: tuple[int, int] = (500, 500)
    layer1_epochs: int = 10             # epochs of the first RBM; the rest train the top RBM
    epochs: int = 40                    # both layers together: 10 + 30 for the top RBM
    learning_rate: float = 0.05
    initial_momentum: float = 0.5       # first layer: 0.5 for 5 epochs, then 0.9 (Hinton 2010, section 9)
    final_momentum: float = 0.9
    momentum_switch: int = 5
    top_momentum: float = 0.5           # top RBM (PCD): at 0.9 its reconstruction error went 9 -> 52 in one epoch
    weight_decay: float = 2e-4
    persistent_chains: int = 100        # PCD fantasy particles of the top RBM


class RBM(TiedSigmoidLayer):
    """Binary RBM: p(h=1|v) = sigmoid(v W + c), p(v=1|h) = sigmoid(h W^T + b)."""

    def __init__(self, visible: int, hidden: int):
        super().__init__(0.01 * torch.randn(visible, hidden))

    @torch.no_grad()
    def gradients(self, positive_v, negative_v, weight_decay: float) -> list[torch.Tensor]:
        """Minus the CD estimate of the log-likelihood gradient (weight, visible bias, hidden bias)."""
        positive_h, negative_h = self.hidden_mean(positive_v), self.hidden_mean(negative_v)
        # Each phase averaged over its own rows: PCD may keep more or fewer chains than a batch has rows.
        weight = (negative_v.T @ negative_h / len(negative_v) - positive_v.T @ positive_h / len(positive_v)
                  + weight_decay * self.weight)
        return [weight, negative_v.mean(0) - positive_v.mean(0), negative_h.mean(0) - positive_h.mean(0)]


class DBN(torch.nn.Module):
    def __init__(self, visible: int = 784, hidden: tuple[int, int] = (500, 500), persistent_chains: int = 100):
        super().__init__()
        self.bottom = RBM(visible, hidden[0])
        self.top = RBM(hidden[0], hidden[1])
        # PCD fantasy particles of the top RBM; set from data when its training starts.
        self.register_buffer("fantasy", torch.zeros(persistent_chains, hidden[0]))


@torch.no_grad()
def _gibbs_top(top: RBM, h1: torch.Tensor, steps: int, rng: torch.Generator) -> torch.Tensor:
    """``steps`` alternating Gibbs updates h2 ~ p(h2|h1), h1 ~ p(h1|h2) in the top RBM."""
    for _ in range(steps):
        h1 = bernoulli(top.visible_mean(bernoulli(top.hidden_mean(h1), rng)), rng)
    return h1


def momentum_at(config: DBNConfig, epochs_done: int) -> float:
    if epochs_done >= config.layer1_epochs:
        return config.top_momentum
    return config.initial_momentum if epochs_done < config.momentum_switch else config.final_momentum


def train_epoch(state: RunState, config: DBNConfig, images: torch.Tensor) -> dict:
    """One epoch of the first RBM (CD-1) or, after ``layer1_epochs``, of the top RBM (PCD-1)."""
    model, rng = state.model, state.rng
    first_layer = state.epochs_done < config.layer1_epochs
    rbm = model.bottom if first_layer else model.top
    momentum = momentum_at(config, state.epochs_done)
    order = torch.randperm(len(images), generator=rng)
    errors = []
    for start in range(0, len(images) - config.batch_size + 1, config.batch_size):
        with torch.no_grad():
            batch = images[order[start:start + config.batch_size]]
            positive = batch if first_layer else model.bottom.hidden_mean(batch)
            if first_layer:  # CD-1 from the data
                negative = rbm.visible_mean(bernoulli(rbm.hidden_mean(positive), rng))
            else:  # PCD-1: the fantasy particles persist across updates, from the data at the start
                if state.epochs_done == config.layer1_epochs and start == 0:
                    model.fantasy.copy_(bernoulli(positive[:len(model.fantasy)], rng))
                model.fantasy.copy_(_gibbs_top(rbm, model.fantasy, 1, rng))
                negative = model.fantasy
            reconstruction = rbm.visible_mean(rbm.hidden_mean(positive))
            errors.append(float(((reconstruction - positive) ** 2).sum(1).mean()))
        grads = rbm.gradients(positive, negative, config.weight_decay)
        frozen = [None] * 3  # the other RBM does not move (greedy layer-wise training)
        state.optimizer.step(grads + frozen if first_layer else frozen + grads, config.learning_rate, momentum)
    return {"layer": 1 if first_layer else 2, "reconstruction_error": float(np.mean(errors)), "momentum": momentum}


# Independent samples for the GAN paper's protocol: CHAINS parallel Gibbs chains in the top
# RBM, each from the sampled first-layer code of a different random training image (chains from
# random h1 fell into a few digits and stayed there: docs/baselines.md), BURN_IN updates
# discarded, then one sample every THINNING updates.
CHAINS = 1_000
BURN_IN = 100
THINNING = 10


@torch.no_grad()
def sample(model: DBN, count: int, seed: int, config: DBNConfig | None = None,
           train_images: np.ndarray | None = None) -> np.ndarray:
    """Gibbs in the top RBM, then the mean-field pass down: each kept binary h1 gives p(x|h1)."""
    if train_images is None:
        from ganbench.data import load_mnist

        train_images = load_mnist().train_x
    rng = torch.Generator().manual_seed(seed)
    chains = min(CHAINS, count)
    per_chain = -(-count // chains)
    starts = train_images[np.random.default_rng(seed).choice(len(train_images), size=chains, replace=False)]
    h1 = _gibbs_top(model.top, bernoulli(model.bottom.hidden_mean(torch.as_tensor(starts)), rng), BURN_IN, rng)
    kept = []
    for _ in progress_bar(range(per_chain), desc="DBN chains", leave=False):  # on a terminal only
        h1 = _gibbs_top(model.top, h1, THINNING, rng)
        kept.append(model.bottom.visible_mean(h1))
    return torch.cat(kept)[:count].numpy()


SPEC = BaselineSpec(
    name="dbn", title="DBN", config_class=DBNConfig,
    build=lambda config, _images: DBN(hidden=tuple(config.hidden), persistent_chains=config.persistent_chains),
    optimizer=lambda model: MomentumBuffers(model.parameters(), averaging=False),
    training_images=first_training_images, train_epoch=train_epoch, monitor=sample_monitor(sample),
)
