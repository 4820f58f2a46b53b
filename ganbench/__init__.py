"""ganbench: evaluate generative models as the GAN paper did, exactly and fast."""
from pathlib import Path

__version__ = "0.1.0"
SHIPPED_GENERATOR = Path(__file__).resolve().parent.parent / "results" / "generator.pt"  # the committed generator
