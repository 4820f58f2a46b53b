"""ganbench: evaluate generative models as the GAN paper did, exactly and fast.

Layout: ``ganbench.scoring`` (the Parzen scorer, any model's samples), ``ganbench.gan`` (the
paper's MNIST GAN), ``ganbench.paper`` (Table 1, figures, the memorisation report,
benchmarks), ``ganbench.kernels`` (Triton), ``ganbench.cli`` (the command).
"""
import os
from pathlib import Path

# torch's CPU allocator puts tensors of 2 MB and more on transparent huge pages when this is set
# before torch is first imported. ganbench's blocked passes allocate and free tiles and banks of
# tens of MB; on 4 KB pages every fresh one is faulted in page by page (2.4-2.9 million faults
# in one `ganbench reproduce table1`, 0.32 million with huge pages), and `reproduce table1` from a
# cold cache took 47.8-48.4 s against 50.9-53.2 s without (2-core AMD EPYC, docs/performance.md).
# Results are unchanged (only where memory comes from); THP_MEM_ALLOC_ENABLE=0 opts out.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"


def _shipped(name: str) -> Path:
    """A file of the repository's results/: inside the package when installed from a wheel
    (pyproject.toml maps results/ to ganbench/results/), else in the checkout beside it."""
    package = Path(__file__).resolve().parent
    installed = package / "results" / name
    return installed if installed.exists() else package.parent / "results" / name


SHIPPED_GENERATOR = _shipped("generator.pt")  # the committed generator, float32 weights

# The public scoring API at the top level, ``from ganbench import parzen, protocol, streaming``, imported on first use:
# ``import ganbench`` stays light (torch loads with the scorer), so the command can answer a Ctrl-C while
# torch loads with one line instead of a traceback.
__all__ = ["parzen", "protocol", "streaming", "__version__"]


def __getattr__(name: str):
    if name in ("parzen", "protocol", "streaming"):
        import importlib

        return importlib.import_module(f"ganbench.scoring.{name}")
    raise AttributeError(f"module 'ganbench' has no attribute {name!r}")
