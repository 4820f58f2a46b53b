"""The layer the DBN's RBMs and the stacked CAE's auto-encoders are both made of."""
from __future__ import annotations

import torch


class TiedSigmoidLayer(torch.nn.Module):
    """A visible and a hidden layer of sigmoid units joined by one weight matrix W (visible x hidden):
    hidden_mean(v) = sigmoid(v W + c), visible_mean(h) = sigmoid(h W^T + b). An RBM reads them as
    p(h = 1 | v) and p(v = 1 | h), a tied-weight auto-encoder as its encoder and decoder."""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        visible, hidden = weight.shape
        self.weight = torch.nn.Parameter(weight)
        self.visible_bias = torch.nn.Parameter(torch.zeros(visible))
        self.hidden_bias = torch.nn.Parameter(torch.zeros(hidden))

    def hidden_mean(self, v):
        return torch.sigmoid(v @ self.weight + self.hidden_bias)

    def visible_mean(self, h):
        return torch.sigmoid(h @ self.weight.T + self.visible_bias)
