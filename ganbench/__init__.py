"""ganbench: evaluate generative models as the GAN paper did, exactly and fast.

Layout: ``ganbench.scoring`` (the Parzen scorer, any model's samples), ``ganbench.gan`` (the
paper's MNIST GAN), ``ganbench.paper`` (Table 1, figures, the memorisation report,
benchmarks), ``ganbench.kernels`` (Triton), ``ganbench.cli`` (the command).
"""
from pathlib import Path

__version__ = "0.1.0"
SHIPPED_GENERATOR = Path(__file__).resolve().parent.parent / "results" / "generator.pt"  # the committed generator

# The public scoring API at the top level: ``from ganbench import parzen, protocol``.
from ganbench.scoring import parzen, protocol  # noqa: E402

__all__ = ["parzen", "protocol", "__version__"]
