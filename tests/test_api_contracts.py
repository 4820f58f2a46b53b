"""The Python API's contracts at its edges: every misuse a one-line GanbenchError, never another exception from
deep inside or a number computed from data on two scales (found by a black-box review of the API)."""
import numpy as np
import pytest
import torch
from tolerances import float32_log_likelihood_bound

from ganbench import parzen, protocol
from ganbench.errors import GanbenchError
from ganbench.paper import kmeans, memorization
from ganbench.scoring import neighbours, streaming
from ganbench.testing import assert_log_likelihood, assert_result_holds


@pytest.fixture
def images(rng):
    """8-bit images as float32 a / 255, as MNIST's: training images and held-out ones, d = 36."""
    as_images = lambda rows: (rng.integers(0, 256, size=(rows, 36)) / 255).astype(np.float32)  # noqa: E731
    return as_images(120), as_images(40)


def test_the_memorisation_report_takes_8_bit_samples_on_the_data_scale(images):
    """Exact copies saved as uint8 against their [0, 1] floats counted no copy at all (distances ~1e6)."""
    train, held_out = images
    copies = np.round(train[:30] * 255).astype(np.uint8)
    report = memorization.report(copies, train, held_out, backend="torch")
    assert report["samples_identical_to_a_training_image"] == 30 and report["copy_rate"] == 1.0
    with pytest.raises(GanbenchError, match="on two scales"):
        memorization.report(train[:30] * 255, train, held_out, backend="torch")


def test_the_memorisation_report_takes_tensors_that_require_grad_and_checks_suspicious(images):
    train, held_out = images
    samples = torch.tensor(train[:20]).requires_grad_()
    report = memorization.report(samples, train, torch.tensor(held_out).requires_grad_(), backend="torch")
    assert report["samples_identical_to_a_training_image"] == 20
    for suspicious in (2.5, -1, True):
        with pytest.raises(GanbenchError, match="suspicious is the number of closest samples"):
            memorization.report(train[:20], train, held_out, suspicious=suspicious)


def test_streaming_refuses_points_and_a_bank_on_two_scales(images):
    train, held_out = images
    as_bytes = np.round(held_out * 255).astype(np.uint8)  # divided by 255 on the way in ...
    with pytest.raises(GanbenchError, match="on two scales"):  # ... against a bank of 0-255 floats
        streaming.log_likelihood(as_bytes, train * 255, [0.2], progress=False)
    expected = parzen.log_likelihood(held_out, train, [0.2], backend="reference")
    np.testing.assert_allclose(streaming.log_likelihood(as_bytes, np.round(train * 255).astype(np.uint8), [0.2],
                                                        progress=False, backend="reference"), expected, rtol=1e-12)


@pytest.mark.parametrize("sigmas", ["0.1", b"0.1", ["0.1", 0.2], True, None, np.array([True]), np.array(["0.1"])])
def test_text_booleans_and_none_are_not_kernel_widths(sigmas, images):
    train, held_out = images
    with pytest.raises(GanbenchError, match="sigmas must be numbers"):
        parzen.log_likelihood(held_out, train, sigmas)


@pytest.mark.parametrize("make, message", [(lambda x: torch.empty(x.shape, device="meta"), "meta device"),
                                           (lambda x: torch.tensor(x).to_sparse(), "sparse_coo tensor")])
def test_tensors_that_hold_no_dense_values_are_one_line(make, message, images):
    train, held_out = images
    for call in (lambda: parzen.log_likelihood(make(held_out), train, [0.2]),
                 lambda: neighbours.nearest(make(held_out), train),
                 lambda: kmeans.fit(make(train), 3, 1, progress=False),
                 # Tracebacks once: sigmas on the meta device, and the bank or held-out data of evaluate.
                 lambda: parzen.log_likelihood(held_out, train, make(np.array([0.2]))),
                 lambda: protocol.evaluate(make(train), held_out, held_out[::-1].copy(), "paper", backend="torch"),
                 lambda: protocol.evaluate(train, held_out, make(held_out), "paper", backend="torch")):
        with pytest.raises(GanbenchError, match=message):
            call()


@pytest.mark.parametrize("options, message", [
    (dict(protocol=None), "protocol must be one of"), (dict(scorer=42), "scorer must be a function"),
    (dict(backnd="torch"), "unknown option 'backnd'"), (dict(value_range="0,1"), "value_range must be"),
    (dict(value_range=(1, 0)), "value_range must be")])
def test_evaluate_refuses_what_it_cannot_use_before_scoring(options, message, images):
    train, held_out = images
    with pytest.raises(GanbenchError, match=message):
        protocol.evaluate(train, held_out, held_out[::-1], **{"protocol": "paper", **options})


def test_kmeans_refuses_offset_float64_points_an_unknown_precision_and_bad_seeds(images):
    train, _ = images
    offset = train.astype(np.float64) + 1e8  # every point rounds to 1e8 in float32: centroids all 1e8
    with pytest.raises(GanbenchError, match="subtract their mean first"):
        kmeans.fit(offset, 3, 2, progress=False)
    assert kmeans.fit(train.astype(np.float64), 3, 2, progress=False).shape == (3, 36)  # float64 in [0, 1]: fine
    with pytest.raises(GanbenchError, match="unknown precision 'bogus'"):
        kmeans.fit(train, 3, 1, precision="bogus", progress=False)
    for seed in (-1, "a", 1.5):
        with pytest.raises(GanbenchError, match="seed must be a whole number"):
            kmeans.fit(train, 3, 1, seed=seed, progress=False)


def test_nearest_refuses_names_and_flags_of_the_wrong_kind(images):
    train, held_out = images
    with pytest.raises(GanbenchError, match="names must be two strings"):
        neighbours.nearest(held_out, train, names="x")
    with pytest.raises(GanbenchError, match="exact_ranking must be True or False"):
        neighbours.nearest(held_out, train, exact_ranking="no")


def test_the_pytest_helpers_take_tensors_and_refuse_what_is_not_a_result(images, tmp_path):
    train, held_out = images
    score = assert_log_likelihood(train, torch.tensor(held_out).requires_grad_(), held_out[::-1].copy(),
                                  expected=0.0, tolerance=1e9, backend="torch")
    assert np.isfinite(score.mean)
    with pytest.raises(GanbenchError, match="validation data .*missing.npy does not exist"):
        assert_log_likelihood(train, tmp_path / "missing.npy", held_out, expected=0.0)
    with pytest.raises(GanbenchError, match="takes the path of a saved result"):
        assert_result_holds(3)
    with pytest.raises(GanbenchError, match="unknown backend 'Torch'"):
        assert_result_holds(tmp_path / "result.json", backend="Torch")


def test_the_reference_reports_the_direct_sum_as_the_nearest_distance(rng):
    """The expanded form ||x||^2 + ||s||^2 - 2 x.s is off in the last bits (0.6249999999999998 for 0.625): every
    other path reports the nearest distance as the float64 sum of squared differences, and now so does the
    reference, its nearest term in the shifted sums moved with it."""
    queries, bank = rng.random((300, 7)), rng.random((50, 7))
    distances, indices = neighbours.nearest(queries, bank, backend="reference", exact_ranking=False)  # the pass's
    direct = torch.sum((torch.tensor(queries) - torch.tensor(bank)[indices[:, 0]]) ** 2, dim=1).numpy()
    np.testing.assert_array_equal(distances[:, 0], direct)
    centred_queries, centred_bank = queries - bank.mean(0), bank - bank.mean(0)
    expanded = ((centred_queries**2).sum(1) + (centred_bank[indices[:, 0]] ** 2).sum(1)
                - 2 * (centred_queries * centred_bank[indices[:, 0]]).sum(1))
    assert np.any(expanded != direct)  # the two forms differ in some rows: the test can fail
    scored = parzen.parzen_pass(queries, bank, [0.05, 0.5], backend="reference")
    np.testing.assert_array_equal(scored.min_sq_distance, direct)
    exact = np.array([[np.logaddexp.reduce(-((q - bank) ** 2).sum(1) / (2 * s * s)) for q in queries] for s in (0.05, 0.5)])
    np.testing.assert_allclose(scored.log_sum_exp, exact, rtol=1e-13, atol=0)


@pytest.mark.parametrize("call, message", [
    (lambda train, held_out: protocol.evaluate(train, np.empty((0, train.shape[1])), held_out, "paper"),
     "the validation data is empty"),
    (lambda train, held_out: protocol.evaluate(train, held_out, np.full((5, train.shape[1]), np.nan), "paper"),
     "the test data contains NaN or inf"),
    (lambda train, held_out: parzen.log_likelihood("samples.npy", train, [0.2]),
     "is a path \\('samples.npy'\\), and this function takes arrays"),
    (lambda train, held_out: parzen.log_likelihood(None, train, [0.2]), "is None; pass an array"),
    (lambda train, held_out: protocol.evaluate(train, held_out, held_out[::-1].copy(), "paper", value_range=(True, 2)),
     "value_range must be"),
])
def test_the_api_names_what_is_wrong(call, message, images):
    """Once: the validation data called 'x (the points scored)', a path reported as 'dtype <U11', None as
    'dtype object', and True taken as the number 1."""
    train, held_out = images
    with pytest.raises(GanbenchError, match=message):
        call(train, held_out)


@pytest.mark.parametrize("backend", ["reference", "torch"])
@pytest.mark.parametrize("make", [lambda a: a.astype(np.longdouble),
                                  lambda a: torch.from_numpy(a).to(torch.float8_e4m3fn),
                                  lambda a: torch.from_numpy(a).to(torch.float8_e5m2),
                                  lambda a: torch.from_numpy(a).to(torch.bfloat16)],
                         ids=["longdouble", "float8_e4m3fn", "float8_e5m2", "bfloat16"])
def test_long_double_arrays_and_float8_tensors_score_as_their_values(make, backend, rng):
    """np.longdouble raised torch's TypeError and float8 tensors a NotImplementedError from aminmax: float8 and
    bfloat16 values are float32 numbers (scored exactly), long double ones are rounded to float64, the
    reference's own arithmetic (as the command reads such files)."""
    points, bank = rng.random((20, 5)), rng.random((30, 5))
    points_as, bank_as = make(points), make(bank)
    as_float64 = lambda values: np.asarray(values.double() if isinstance(values, torch.Tensor) else values,  # noqa: E731
                                           dtype=np.float64)
    expected = parzen.log_likelihood(as_float64(points_as), as_float64(bank_as), [0.1, 0.3], backend="reference")
    scores = parzen.log_likelihood(points_as, bank_as, [0.1, 0.3], backend=backend)
    if backend == "reference":  # the same float64 arithmetic on the same float64 values
        np.testing.assert_array_equal(scores, expected)
    else:  # the float32 pass within its derived bound (tests/tolerances.py)
        assert np.all(np.abs(scores - expected) <= float32_log_likelihood_bound(as_float64(points_as),
                                                                                as_float64(bank_as), [0.1, 0.3]))
    np.testing.assert_array_equal(neighbours.nearest(points_as, bank_as, k=2, backend=backend)[1],
                                  neighbours.nearest(as_float64(points_as), as_float64(bank_as), k=2)[1])


def test_integer_inputs_widen_only_as_far_as_their_values_need():
    """Bytes and booleans are float32 numbers exactly (a uint8 bank of 200,000 x 784 became 1.2 GB of float64);
    integers of 32 bits and more need float64 to stay exact."""
    from ganbench.scoring.inputs import as_matrix

    for dtype, widened in ((np.uint8, torch.float32), (np.int16, torch.float32), (np.bool_, torch.float32),
                           (np.int32, torch.float64), (np.int64, torch.float64)):
        values = np.array([[0, 1], [1, 0]], dtype=dtype) if dtype is np.bool_ else \
            np.array([[np.iinfo(dtype).max, np.iinfo(dtype).min], [3, 0]], dtype=dtype)
        tensor = as_matrix("bank", values)
        assert tensor.dtype == widened
        np.testing.assert_array_equal(tensor.numpy().astype(np.float64), values.astype(np.float64))
