"""Every option's choices and default, and every result key, defined once.

The API, the CLI (``choices=`` and ``default=``) and the kernels all read these, so a name
added or renamed here cannot leave a stale copy elsewhere.
"""
from __future__ import annotations

# Scorer backends: ``reference`` is float64 on the CPU (the ground truth), ``torch`` float32 GEMM
# form on CPU or CUDA, ``triton`` the fused kernel, ``auto`` triton on CUDA, else torch.
BACKENDS = ("auto", "reference", "torch", "triton")
DEFAULT_BACKEND = "auto"

# The triton backend's arithmetic for the distance product (docs/precision.md):
# tf32x3 three TF32 products (float32-like accuracy), ieee float32 FMA, tf32 one TF32
# product (fast, off by nats: for speed studies only), int8 exact int8 tensor-core products
# for 8-bit queries (MNIST's a / 255) against a bank in [0, 1] (an error otherwise), auto
# int8 where it applies and tf32x3 elsewhere: the default, since int8 was timed and checked
# on an H200 (benchmarks/gpu_check.py --targets: 1.6e-7 nats from float64 on MNIST against
# tf32x3's 4.7e-4). Results saved with --save score auto with tf32x3 (docs/precision.md). On the
# CPU (torch backend) int8 and auto take exact int8 products when queries and bank are both 8-bit, and
# int8 products of the bank's three base-256 digits for 8-bit queries against any other bank in [0, 1].
PRECISIONS = ("tf32x3", "ieee", "tf32", "int8", "auto")
DEFAULT_PRECISION = "auto"

# Sigma protocols (registered in ganbench.scoring.protocol): the paper's on MNIST, where it
# reproduces the published number; the search from the data's own scale on the user's data.
DEFAULT_PROTOCOL = "paper"
OWN_DATA_PROTOCOL = "full"

# Bank rows read and scored at a time when a bank is streamed from disk: 65,536 MNIST rows
# are 200 MB of float32, small beside memory and large enough to keep the GEMM efficient.
CHUNK_ROWS = 65_536

# Where commands write their results unless told (--out): a folder under the current directory,
# so that running ganbench inside its own checkout never rewrites the committed results/.
DEFAULT_OUT = "ganbench-results"

# Keys of a score's result dictionary (``ParzenScore.as_dict``, Table 1 rows, --json output).
KEY_SIGMA = "sigma"
KEY_MEAN = "mean"
KEY_STANDARD_ERROR = "standard_error"
KEY_COPY_RATE = "copy_rate"

# Keys of the memorisation report (``ganbench.paper.memorization.report``, ``ganbench nn --json``,
# the "memorization" part of results/table1.json). Counts of samples, never of pairs.
KEY_N_SAMPLES = "n_samples"
KEY_N_TEST = "n_test"
KEY_SAMPLE_TO_TRAIN = "sample_to_train"
KEY_TEST_TO_TRAIN = "test_to_train"
KEY_COPY_THRESHOLD = "copy_threshold"
KEY_EXPECTED_COPY_RATE = "expected_copy_rate_for_unseen_data"
KEY_EXACT_TRAINING_COPIES = "samples_identical_to_a_training_image"
KEY_NEAR_COPY_THRESHOLD = "near_copy_threshold"
KEY_NEAR_TRAINING_COPIES = "samples_near_a_training_image"
KEY_EXPECTED_NEAR_TRAINING_COPIES = "expected_samples_near_a_training_image_for_unseen_data"
KEY_HELD_OUT_IN_TRAINING = "held_out_identical_to_a_training_image"
KEY_SAMPLES_WITH_EXACT_TWIN = "samples_with_an_identical_sample"
KEY_SAMPLES_WITH_NEAR_TWIN = "samples_with_a_near_sample"
KEY_WITHIN_SAMPLES_NEAREST = "within_samples_nearest"
KEY_MOST_SUSPICIOUS = "most_suspicious"

# Models `ganbench train/sample/export --model` knows: the paper's GAN and the other rows of
# its Table 1 (ganbench/baselines).
MODELS = ("gan", "gsn", "dbn", "cae")
DEFAULT_MODEL = "gan"
