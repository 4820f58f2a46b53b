"""The shipped DBN's Table 1 row against its sampler's chains and burn-in: `python benchmarks/dbn_burn_in.py`.

Each case draws 10,000 samples from the shipped weights (seed 0): CHAINS Gibbs chains in the top
RBM started at the sampled first-layer codes of random training images, BURN_IN updates
discarded, then every 10th state's mean image, and scores them under the GAN paper's protocol.
docs/baselines.md quotes the output: scores that fall as the chains run longer say the top
RBM's equilibrium, not the sampler, is what keeps the row low.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import torch

from ganbench import baselines
from ganbench.baselines import dbn
from ganbench.baselines.training import bernoulli
from ganbench.data import load_mnist
from ganbench.scoring import protocol

CASES = [(10_000, 100), (10_000, 1_000), (1_000, 1_000)]  # (chains, burn-in); the shipped sampler: Table 1


@torch.no_grad()
def draw(model, train_images: np.ndarray, chains: int, burn_in: int, count: int = 10_000, seed: int = 0,
         thinning: int = dbn.THINNING) -> np.ndarray:
    rng = torch.Generator().manual_seed(seed)
    starts = train_images[np.random.default_rng(seed).choice(len(train_images), size=chains, replace=False)]
    h1 = dbn._gibbs_top(model.top, bernoulli(model.bottom.hidden_mean(torch.as_tensor(starts)), rng), burn_in, rng)
    kept = [model.bottom.visible_mean(h1)]
    while sum(len(piece) for piece in kept) < count:
        h1 = dbn._gibbs_top(model.top, h1, thinning, rng)
        kept.append(model.bottom.visible_mean(h1))
    return torch.cat(kept)[:count].numpy()


def main() -> int:
    mnist = load_mnist()
    model, _, _ = baselines.load("dbn")
    rows = []
    for chains, burn_in in CASES:
        score = protocol.evaluate(draw(model, mnist.train_x, chains, burn_in), mnist.valid_x, mnist.test_x, "paper")
        rows.append({"chains": chains, "burn_in": burn_in, "mean": score.mean, "standard_error": score.standard_error,
                     "sigma": score.sigma})
        print(json.dumps(rows[-1]), file=sys.stderr)
    print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
