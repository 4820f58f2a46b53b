"""The Table 1 baselines (ganbench/baselines): samplers, the GSN's update order and walkback, the CAE's
Jacobian step, bit-exact resume, the authors' GSN bank. Small layers and random data keep it fast."""
import contextlib
import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ganbench import baselines
from ganbench.baselines import cae, dbn, gsn, training
from ganbench.errors import GanbenchError

SMALL = {
    "gsn": gsn.GSNConfig(hidden=24, train_subset=300, epochs=2, monitor_chains=3, monitor_steps=5, monitor_valid=20),
    "dbn": dbn.DBNConfig(hidden=(24, 16), layer1_epochs=1, epochs=3, train_subset=300, persistent_chains=10,
                         monitor_samples=30, monitor_valid=20),
    "cae": cae.CAEConfig(hidden=(24, 16), layer1_epochs=1, epochs=3, train_subset=300, monitor_samples=30,
                         monitor_valid=20),
}


@pytest.fixture
def fake_mnist(rng):
    """Random images in [0, 1] with MNIST's width: enough to train and sample the small models."""
    images = lambda rows: rng.random((rows, 784), dtype=np.float32) ** 3  # noqa: E731 (mostly dark, like digits)
    return SimpleNamespace(train_x=images(300), valid_x=images(40), test_x=images(40))


def small_model(name):
    torch.manual_seed(0)
    return baselines.module(name).SPEC.build(SMALL[name], None)


def draw(name, count, seed, fake_mnist):
    extra = {"train_images": fake_mnist.train_x} if name != "cae" else {}  # chains that start at training images
    return baselines.module(name).sample(small_model(name), count, seed=seed, config=SMALL[name], **extra)


@pytest.mark.parametrize("name", baselines.BASELINES)
def test_each_sampler_gives_count_images_in_the_unit_interval(name, fake_mnist):
    samples = draw(name, 23, 5, fake_mnist)
    assert samples.shape == (23, 784) and samples.dtype == np.float32
    assert np.all(np.isfinite(samples)) and samples.min() >= 0 and samples.max() <= 1
    again = draw(name, 23, 5, fake_mnist)
    np.testing.assert_array_equal(samples, again)  # a seed fixes the samples
    assert len(np.unique(samples.round(4), axis=0)) > 20  # distinct samples, not one image repeated


def test_gsn_update_order_odd_layers_then_even():
    """h1 from x and the OLD h2; then p(x|h1) and h2 from the NEW h1, noise only around h2's activation."""
    model = small_model("gsn")
    config = dataclasses.replace(SMALL["gsn"], hidden_noise=0.0, salt_and_pepper=0.0)
    x, old_h2 = torch.rand(5, 784), torch.tanh(torch.randn(5, 24))
    with torch.no_grad():
        logits, sampled, new_h2 = model.step(x, old_h2, config, torch.Generator().manual_seed(0))
        new_h1 = torch.tanh(x @ model.w1 + old_h2 @ model.w2.T + model.b1)
        torch.testing.assert_close(logits, new_h1 @ model.w1.T + model.b0, rtol=0, atol=1e-5)
        torch.testing.assert_close(new_h2, torch.tanh(new_h1 @ model.w2 + model.b2), rtol=0, atol=1e-6)
    assert set(sampled.unique().tolist()) <= {0.0, 1.0}  # x~ = Bernoulli(p) (no salt-and-pepper at rate 0)


def test_gsn_noise_sits_only_around_the_top_activation():
    model = small_model("gsn")
    x, h2 = torch.rand(4, 784), torch.zeros(4, 24)
    config = dataclasses.replace(SMALL["gsn"], salt_and_pepper=0.0)
    quiet = dataclasses.replace(config, hidden_noise=0.0)
    with torch.no_grad():
        noisy_logits, _, noisy_h2 = model.step(x, h2, config, torch.Generator().manual_seed(1))
        quiet_logits, _, quiet_h2 = model.step(x, h2, quiet, torch.Generator().manual_seed(1))
    torch.testing.assert_close(noisy_logits, quiet_logits, rtol=0, atol=0)  # h1 has no noise (noiseless_h1)
    assert (noisy_h2 - quiet_h2).abs().max() > 1.0  # std 2 after tanh: h2 leaves [-1, 1]


def test_gsn_walkback_is_four_reconstructions_summed_and_trains_the_top_layer():
    model = small_model("gsn")
    images = torch.rand(6, 784)
    chain = gsn.walkback_logits(model, images, SMALL["gsn"], torch.Generator().manual_seed(2))
    assert len(chain) == SMALL["gsn"].walkback == 4 and all(logits.shape == (6, 784) for logits in chain)
    loss = gsn.walkback_loss(model, images, SMALL["gsn"], torch.Generator().manual_seed(2))
    expected = sum(F.binary_cross_entropy_with_logits(logits, images) for logits in chain)
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)
    # With one update the top layer cannot reach p(x|h); the walkback's later steps give it a gradient.
    one_step = gsn.walkback_loss(model, images, dataclasses.replace(SMALL["gsn"], walkback=1), torch.Generator())
    assert torch.autograd.grad(one_step, model.w2, allow_unused=True)[0] is None
    assert torch.autograd.grad(loss, model.w2)[0].abs().sum() > 0


def test_salt_and_pepper_rate():
    rng = torch.Generator().manual_seed(3)
    x = torch.full((400, 784), 0.3)
    noisy = gsn.salt_and_pepper(x, 0.4, rng)
    changed = noisy != 0.3
    # 313,600 pixels: the rates' standard errors are below 0.001, so 0.005 is > 5 of them.
    assert abs(changed.float().mean().item() - 0.4) < 0.005
    assert abs(noisy[changed].mean().item() - 0.5) < 0.005 and set(noisy[changed].unique().tolist()) == {0.0, 1.0}


def test_cae_jacobian_step_equals_autograd():
    torch.manual_seed(4)
    layer = cae.CAE(7, 5).double()
    x = torch.rand(3, 7, dtype=torch.float64)
    alpha = torch.randn(3, 5, dtype=torch.float64)
    h = layer.encode(x)
    for row in range(3):
        jacobian = torch.autograd.functional.jacobian(layer.encode, x[row])  # (5, 7): dh/dx
        torch.testing.assert_close(layer.jacobian_step(h[row:row + 1], alpha[row:row + 1])[0],
                                   jacobian @ jacobian.T @ alpha[row], rtol=1e-12, atol=1e-12)
        # The contractive penalty of the loss is the same Jacobian's squared Frobenius norm.
        penalty = ((h[row] * (1 - h[row])) ** 2 @ (layer.weight ** 2).sum(0))
        torch.testing.assert_close(penalty, (jacobian ** 2).sum(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", baselines.BASELINES)
def test_resume_is_bit_exact(name, fake_mnist, tmp_path):
    spec = baselines.module(name).SPEC
    config = SMALL[name]  # dbn and cae: the resumed epoch is the second layer's first (PCD chains start)
    straight = training.train(spec, config, tmp_path / "straight", data=fake_mnist, progress=False)
    training.train(spec, dataclasses.replace(config, epochs=config.epochs - 1), tmp_path / "split", data=fake_mnist,
                   progress=False)
    resumed = training.train(spec, training.resolve_config(spec, tmp_path / "split", True, epochs=config.epochs),
                             tmp_path / "split", resume=True, data=fake_mnist, progress=False)
    for key, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    drop_time = lambda log: [{k: v for k, v in row.items() if k != "seconds"} for row in log]  # noqa: E731
    assert drop_time(straight.log) == drop_time(resumed.log)
    assert straight.rng.get_state().equal(resumed.rng.get_state())


def test_resume_refuses_another_model_or_setting(fake_mnist, tmp_path):
    training.train(cae.SPEC, SMALL["cae"], tmp_path, data=fake_mnist, progress=False)
    with pytest.raises(GanbenchError, match="is a cae run, not dbn"):
        training.resolve_config(dbn.SPEC, tmp_path, True)
    with pytest.raises(GanbenchError, match="trained with seed=0, not 3"):
        training.resolve_config(cae.SPEC, tmp_path, True, seed=3)
    with pytest.raises(GanbenchError, match="exists; add --resume"):
        training.train(cae.SPEC, SMALL["cae"], tmp_path, data=fake_mnist, progress=False)
    # --epochs counts every epoch: asking a resumed 3-epoch run for 1 once said "trained for 3 epochs", rc 0.
    with pytest.raises(GanbenchError, match="already trained 3 epochs.*pass at least 3"):
        training.train(cae.SPEC, training.resolve_config(cae.SPEC, tmp_path, True, epochs=1), tmp_path, resume=True,
                       data=fake_mnist, progress=False)


@pytest.mark.parametrize("setting, message", [(dict(max_minutes=-1.0), "must be > 0, got -1.0"),
                                              (dict(max_minutes=float("nan")), "must be > 0, got nan"),
                                              (dict(subset=100_000), "train_subset .* 100000 exceeds the 300 training")])
def test_a_baseline_run_refuses_a_budget_or_subset_that_means_nothing(setting, message, fake_mnist, tmp_path):
    """The GAN refused these; the baselines stopped after one epoch (a negative budget), ignored NaN, or trained
    on every image while recording the subset asked for."""
    config = dataclasses.replace(SMALL["cae"], train_subset=setting.get("subset", SMALL["cae"].train_subset))
    with pytest.raises(GanbenchError, match=message):
        training.train(cae.SPEC, config, tmp_path, data=fake_mnist, progress=False,
                       max_minutes=setting.get("max_minutes"))
    assert not (tmp_path / training.CHECKPOINT_NAME).exists()


def test_shipped_weights_round_trip_in_their_dtype(fake_mnist, tmp_path):
    training.train(gsn.SPEC, SMALL["gsn"], tmp_path / "run", data=fake_mnist, progress=False)
    path = training.export(gsn.SPEC, tmp_path / "run", tmp_path / "ship")
    assert torch.load(path, weights_only=True)["weights"]["w1"].dtype == torch.float16
    model, config, metadata = baselines.load("gsn", path)
    assert model.w1.dtype == torch.float32 and metadata["dtype"] == "float16" and config == SMALL["gsn"]
    assert "among epochs 1-2" in metadata["selection"]
    with pytest.raises(GanbenchError, match="holds a gsn model, not a dbn"):
        baselines.load("dbn", path)


def test_authors_gsn_bank_starts_at_the_given_test_image(fake_mnist):
    start = fake_mnist.test_x[0]
    bank = gsn.authors_bank(small_model("gsn"), start, seed=0, size=50, config=SMALL["gsn"])
    assert bank.shape == (50, 784)
    np.testing.assert_array_equal(bank[0], start)  # the test image itself is in its own bank
    assert not np.any(np.all(bank[1:] == start, axis=1))
    assert 0 < bank[1:].min() and bank[1:].max() < 1  # then means p(x|h), never binary states


def test_missing_or_unknown_baseline_is_a_one_line_error(tmp_path):
    with pytest.raises(GanbenchError, match="no dbn weights at"):
        baselines.cached_bank("dbn", "samples", 0, tmp_path / "dbn.pt")
    with pytest.raises(GanbenchError, match="unknown baseline 'vae'"):
        baselines.module("vae")


def test_the_report_sees_a_test_image_inside_a_bank(fake_mnist):
    from ganbench.baselines import report

    bank = np.vstack([fake_mnist.test_x[3], fake_mnist.valid_x[:29]])  # as the authors' GSN bank holds test image 0
    result = report.bank_report(bank, fake_mnist, backend="torch")
    assert result["exact_test_copies"] == 1
    assert result["exact_test_copy_rows"] == [{"bank_row": 0, "test_index": 3}]
    assert result["samples_identical_to_a_training_image"] == 0  # the training-set checks alone cannot see it


def test_gsn_chain_keeps_only_the_means_asked_for_from_the_same_chain():
    # Keeping every fifth mean after a burn-in must give those means of the whole chain, bit for bit:
    # every update runs whichever are kept, so the random stream is the same.
    model, config = gsn.DeepGSN(), gsn.GSNConfig()
    starts = np.random.default_rng(0).random((7, 784)).astype(np.float32)
    every_mean = gsn.chain_means(model, starts, 40, config, torch.Generator().manual_seed(3))
    kept = gsn.chain_means(model, starts, 40, config, torch.Generator().manual_seed(3), first_kept=9, every=5)
    np.testing.assert_array_equal(kept, every_mean[9::5])


def test_one_gsn_chain_runs_torch_on_one_thread_and_gives_the_same_means(monkeypatch):
    """A single chain's products run on OpenBLAS's threads; torch's own operations beside them, once a script had
    set torch's thread count, took the cores from them (0.47 -> 16.6 ms a step). The chain now runs torch on one
    thread, restores the count after, and its means are those of a chain run without that, bit for bit."""
    model, config = gsn.DeepGSN(hidden=64), gsn.GSNConfig(hidden=64)
    start = np.random.default_rng(0).random((1, 784)).astype(np.float32)
    threads_seen, product = [], gsn.blas_product

    def recording_product(activations, weights):
        threads_seen.append(torch.get_num_threads())
        return product(activations, weights)

    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(gsn, "blas_product", recording_product)
        means = gsn.chain_means(model, start, 12, config, torch.Generator().manual_seed(5))
        assert set(threads_seen) == {1} and torch.get_num_threads() == 2
        monkeypatch.setattr(gsn, "one_torch_thread", contextlib.nullcontext)
        threads_seen.clear()
        unchanged = gsn.chain_means(model, start, 12, config, torch.Generator().manual_seed(5))
        assert set(threads_seen) == {2}
    finally:
        torch.set_num_threads(previous)
    np.testing.assert_array_equal(means, unchanged)


def test_resuming_without_the_best_epochs_weights_says_so(fake_mnist, tmp_path, capsys):
    """The best epoch's weights cannot be rebuilt from the checkpoint: a run resumed without them warned nobody
    until `export --best` failed."""
    config = dataclasses.replace(SMALL["cae"], epochs=2)
    training.train(cae.SPEC, config, tmp_path, data=fake_mnist, progress=False)
    (tmp_path / training.BEST_NAME).write_bytes(b"damaged")
    capsys.readouterr()
    training.train(cae.SPEC, training.resolve_config(cae.SPEC, tmp_path, True, epochs=3), tmp_path, resume=True,
                   data=fake_mnist, progress=False)
    assert "best.pt is missing or damaged; the best epoch so far (epoch" in capsys.readouterr().err


def test_a_best_file_of_an_epoch_the_log_lacks_is_not_exported_and_resume_repairs_the_log(fake_mnist, tmp_path):
    """A kill after best.pt was written and before the checkpoint (and log) left a best file one epoch ahead of
    the log: export --best shipped it 'among epochs 1-2'. Now refused; and a resume rewrites the log from the
    checkpoint (one cut short by a kill between the two writes was never rewritten)."""
    config = dataclasses.replace(SMALL["cae"], epochs=2)
    training.train(cae.SPEC, config, tmp_path / "two", data=fake_mnist, progress=False)
    training.train(cae.SPEC, dataclasses.replace(config, epochs=3), tmp_path / "three", data=fake_mnist, progress=False)
    for name in (training.CHECKPOINT_NAME, training.LOG_NAME):
        (tmp_path / "three" / name).write_bytes((tmp_path / "two" / name).read_bytes())
    # The state that kill leaves whichever epoch was best: epoch 3's weights as the best file.
    last = training.load_model(cae.SPEC, tmp_path / "three" / training.BEST_NAME)[0]
    training.save_weights(tmp_path / "three" / training.BEST_NAME, cae.SPEC, last, config, 3, selection="epoch 3")
    with pytest.raises(GanbenchError, match="holds epoch 3 but .* peaks at epoch"):
        training.export(cae.SPEC, tmp_path / "three", tmp_path / "ship")
    log_path = tmp_path / "two" / training.LOG_NAME
    whole = log_path.read_text()
    log_path.write_text("".join(whole.splitlines(keepends=True)[:2]))  # epoch 1 only: the kill's short log
    with pytest.raises(GanbenchError, match="does not hold epochs 1..2"):
        training.export(cae.SPEC, tmp_path / "two", tmp_path / "ship", best=False)
    training.train(cae.SPEC, training.resolve_config(cae.SPEC, tmp_path / "two", True, epochs=2), tmp_path / "two",
                   resume=True, data=fake_mnist, progress=False)
    assert log_path.read_text() == whole
    training.export(cae.SPEC, tmp_path / "two", tmp_path / "ship", best=False)
    with pytest.raises(GanbenchError, match="no best.pt in .* \\(or drop --best\\)"):
        (tmp_path / "two" / training.BEST_NAME).unlink()
        training.export(cae.SPEC, tmp_path / "two", tmp_path / "ship")


def test_a_baseline_monitor_width_the_scorer_refuses_is_refused_before_training(fake_mnist, tmp_path):
    config = dataclasses.replace(SMALL["gsn"], monitor_sigma=1e-300)
    with pytest.raises(GanbenchError, match="monitor_sigma must be >= 5.3e-155, got 1e-300"):
        training.train(gsn.SPEC, config, tmp_path, data=fake_mnist, progress=False)
    assert not (tmp_path / training.CHECKPOINT_NAME).exists()


def test_the_best_epoch_of_a_stacked_model_is_one_of_its_top_layer(fake_mnist, tmp_path, capsys):
    """A DBN run of first-layer epochs only shipped its untrained top RBM with --best, as "the highest monitor of
    its run"; the best epoch is now chosen among top-layer epochs (the first is epoch layer1_epochs + 1)."""
    first_only = dataclasses.replace(SMALL["dbn"], epochs=1)
    training.train(dbn.SPEC, first_only, tmp_path / "one", data=fake_mnist, progress=False)
    assert not (tmp_path / "one" / training.BEST_NAME).exists()
    with pytest.raises(GanbenchError, match="has trained its first layer only, and a best epoch is chosen among"):
        training.export(dbn.SPEC, tmp_path / "one", tmp_path / "ship")
    training.export(dbn.SPEC, tmp_path / "one", tmp_path / "last", best=False)  # the last epoch: said to be partial
    assert "trained its first layer only: the exported dbn's top layer is untrained" in capsys.readouterr().err
    state = training.train(dbn.SPEC, SMALL["dbn"], tmp_path / "three", data=fake_mnist, progress=False)
    top = [row for row in state.log if row["layer"] == 2]
    best = max(top, key=lambda row: row["parzen_valid"])
    _, _, metadata = baselines.load("dbn", training.export(dbn.SPEC, tmp_path / "three", tmp_path / "ship"))
    assert metadata["epochs_done"] == best["epoch"] and "among epochs 2-3" in metadata["selection"]


def test_an_export_that_cannot_write_its_log_leaves_the_weights_as_they_were(fake_mnist, tmp_path):
    """A log target that could not be written (a folder in its place) failed after the weights were replaced:
    new weights beside the old log, or weights alone in a new folder."""
    training.train(cae.SPEC, SMALL["cae"], tmp_path / "run", data=fake_mnist, progress=False)
    for ship in (tmp_path / "new", tmp_path / "old"):
        (ship / f"cae_{training.LOG_NAME}").mkdir(parents=True)
    (tmp_path / "old" / "cae.pt").write_bytes(b"the weights shipped before")
    for ship in (tmp_path / "new", tmp_path / "old"):
        with pytest.raises(GanbenchError, match="cannot write .*cae_train_log.csv: a folder is in its place"):
            training.export(cae.SPEC, tmp_path / "run", ship, best=False)
    assert not (tmp_path / "new" / "cae.pt").exists()
    assert (tmp_path / "old" / "cae.pt").read_bytes() == b"the weights shipped before"
    assert not [path for path in (tmp_path / "old").iterdir() if path.name.endswith(".tmp")]
