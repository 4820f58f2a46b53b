"""ganbench: evaluate generative models as the GAN paper did, exactly and fast.

Layout: ``ganbench.scoring`` (the Parzen scorer, any model's samples), ``ganbench.gan`` (the
paper's MNIST GAN), ``ganbench.paper`` (Table 1, figures, the memorisation report,
benchmarks), ``ganbench.kernels`` (Triton), ``ganbench.cli`` (the command).
"""
from pathlib import Path

__version__ = "0.1.0"


def _shipped(name: str) -> Path:
    """A file of the repository's results/: inside the package when installed from a wheel
    (pyproject.toml maps results/ to ganbench/results/), else in the checkout beside it."""
    package = Path(__file__).resolve().parent
    installed = package / "results" / name
    return installed if installed.exists() else package.parent / "results" / name


SHIPPED_GENERATOR = _shipped("generator.pt")  # the committed generator, float32 weights

# The public scoring API at the top level: ``from ganbench import parzen, protocol``.
from ganbench.scoring import parzen, protocol  # noqa: E402

__all__ = ["parzen", "protocol", "__version__"]
