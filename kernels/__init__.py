"""Triton kernels of ganbench, shipped as ``ganbench.kernels`` (see pyproject's package-dir)."""
