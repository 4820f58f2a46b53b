"""Every option's choices and default, and every result key, defined once.

The API, the CLI (``choices=`` and ``default=``) and the kernels all read these, so a name
added or renamed here cannot leave a stale copy elsewhere.
"""
from __future__ import annotations

# Scorer backends: ``reference`` is NumPy float64 (the ground truth), ``torch`` float32 GEMM
# form on CPU or CUDA, ``triton`` the fused kernel, ``auto`` triton on CUDA, else torch.
BACKENDS = ("auto", "reference", "torch", "triton")
DEFAULT_BACKEND = "auto"

# The triton backend's arithmetic for the distance product (docs/precision.md):
# tf32x3 three TF32 products (float32-like accuracy), ieee float32 FMA, tf32 one TF32
# product (fast, off by nats: for speed studies only).
PRECISIONS = ("tf32x3", "ieee", "tf32")
DEFAULT_PRECISION = "tf32x3"

# Bank rows read and scored at a time when a bank is streamed from disk: 65,536 MNIST rows
# are 200 MB of float32, small beside memory and large enough to keep the GEMM efficient.
CHUNK_ROWS = 65_536

# Keys of a score's result dictionary (``ParzenScore.as_dict``, Table 1 rows, --json output).
KEY_SIGMA = "sigma"
KEY_MEAN = "mean"
KEY_STANDARD_ERROR = "standard_error"
KEY_COPY_RATE = "copy_rate"

# Models `ganbench train/sample/export --model` knows: the paper's GAN and the other rows of
# its Table 1 (ganbench/baselines).
MODELS = ("gan", "gsn", "dbn", "cae")
DEFAULT_MODEL = "gan"
