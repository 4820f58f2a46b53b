"""The paper's MNIST generator and discriminator (the authors' mnist.yaml; docs/paper.md, "The MNIST model and optimiser").

G: z (100, uniform on [-sqrt 3, sqrt 3]) -> ReLU 1200 -> ReLU 1200 -> Sigmoid 784.
D: x (784) -> Maxout 240x5 -> Maxout 240x5 -> Sigmoid 1, dropout on every layer's input.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

NOISE_DIM = 100
IMAGE_DIM = 784
NOISE_HALF_WIDTH = math.sqrt(3.0)  # uniform on [-sqrt 3, sqrt 3] has unit variance


def sample_noise(count: int, generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    noise = torch.rand(count, NOISE_DIM, generator=generator, device=generator.device if generator else device)
    return ((noise * 2.0 - 1.0) * NOISE_HALF_WIDTH).to(device)  # (count, 100)


def _uniform_(layer: nn.Linear, half_range: float) -> nn.Linear:
    """pylearn2's ``irange``: weights uniform in [-r, r], biases zero."""
    nn.init.uniform_(layer.weight, -half_range, half_range)
    nn.init.zeros_(layer.bias)
    return layer


class Generator(nn.Module):
    def __init__(self, hidden: int = 1200, init_range: float = 0.05):
        super().__init__()
        self.net = nn.Sequential(
            _uniform_(nn.Linear(NOISE_DIM, hidden), init_range), nn.ReLU(),
            _uniform_(nn.Linear(hidden, hidden), init_range), nn.ReLU(),
            _uniform_(nn.Linear(hidden, IMAGE_DIM), init_range),
        )

    def init_output_bias(self, pixel_means: np.ndarray) -> None:
        """Output bias = logit of the training pixel means, clipped away from 0 and 1
        (pylearn2's init_sigmoid_bias_from_marginals), so G starts at the mean image."""
        means = np.clip(np.asarray(pixel_means, dtype=np.float64), 1e-7, 1 - 1e-7)
        with torch.no_grad():
            self.net[-1].bias.copy_(torch.from_numpy(np.log(means / (1 - means))).float())

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(noise))  # (batch, 784) in (0, 1)


class Maxout(nn.Module):
    """``units`` outputs, each the max of ``pieces`` linear pieces (Goodfellow et al. 2013)."""

    def __init__(self, inputs: int, units: int, pieces: int, init_range: float):
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = _uniform_(nn.Linear(inputs, units * pieces), init_range)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        pieces = self.linear(inputs).view(-1, self.units, self.pieces)  # (batch, units, pieces)
        return pieces.max(dim=2).values


class Discriminator(nn.Module):
    """Returns logits; D(x) = sigmoid(logit). Dropout keeps 0.8 of the image and 0.5 of each
    hidden layer, scaling kept units by 1/keep (mnist.yaml: input scales 1.25 and 2)."""

    def __init__(self, units: int = 240, pieces: int = 5, init_range: float = 0.005,
                 image_keep: float = 0.8, hidden_keep: float = 0.5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(1 - image_keep), Maxout(IMAGE_DIM, units, pieces, init_range),
            nn.Dropout(1 - hidden_keep), Maxout(units, units, pieces, init_range),
            nn.Dropout(1 - hidden_keep), _uniform_(nn.Linear(units, 1), init_range),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images).squeeze(1)  # (batch,) logits
