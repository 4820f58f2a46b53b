"""The GAN core: models, schedules, Algorithm 1, checkpoints and exact resume."""
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from ganbench import cli
from ganbench.errors import GanbenchError
from ganbench.gan import export, models, sampling
from ganbench.gan.train import (
    TrainConfig,
    learning_rate_at,
    load_checkpoint,
    momentum_at,
    resolve_config,
    train,
)


def test_generator_and_discriminator_shapes_and_ranges():
    torch.manual_seed(0)
    generator, discriminator = models.Generator(), models.Discriminator()
    noise = models.sample_noise(7, torch.Generator().manual_seed(0))
    assert noise.shape == (7, 100) and noise.abs().max() <= math.sqrt(3)
    images = generator(noise)
    assert images.shape == (7, 784) and images.min() > 0 and images.max() < 1
    assert discriminator(images).shape == (7,)
    for layer in (generator.net[0], generator.net[2], generator.net[4]):
        assert layer.weight.abs().max() <= 0.05
    assert discriminator.net[1].linear.weight.abs().max() <= 0.005


def test_output_bias_is_the_logit_of_pixel_means():
    generator = models.Generator()
    means = np.array([0.0, 0.25, 1.0] + [0.5] * 781)
    generator.init_output_bias(means)
    bias = generator.net[-1].bias.detach().double().numpy()
    assert bias[1] == pytest.approx(math.log(0.25 / 0.75), abs=1e-6)
    assert bias[0] == pytest.approx(math.log(1e-7 / (1 - 1e-7)), rel=1e-5)  # clipped away from 0


def test_dropout_keeps_and_scales_as_the_authors_config():
    torch.manual_seed(0)
    discriminator = models.Discriminator().train()
    ones = torch.ones(2000, 784)
    image_dropout, hidden_dropout = discriminator.net[0], discriminator.net[2]
    dropped = image_dropout(ones)
    assert set(torch.unique(dropped).tolist()) == {0.0, 1.25}   # keep 0.8, scale 1/0.8
    assert dropped.ne(0).float().mean().item() == pytest.approx(0.8, abs=0.01)
    assert set(torch.unique(hidden_dropout(ones)).tolist()) == {0.0, 2.0}  # keep 0.5, scale 2
    discriminator.eval()
    assert torch.equal(image_dropout(ones), ones)


def test_learning_rate_and_momentum_schedules():
    config = TrainConfig()
    assert learning_rate_at(config, 0) == 0.1
    assert learning_rate_at(config, 1_000_000) == pytest.approx(0.1 / 1.000004 ** 1_000_000)
    assert learning_rate_at(config, 10_000_000) == 1e-6  # the floor
    assert momentum_at(config, 0) == 0.5 and momentum_at(config, 1) == 0.5
    assert momentum_at(config, 125) == pytest.approx(0.5 + 0.2 * 124 / 249)
    assert momentum_at(config, 250) == pytest.approx(0.7) and momentum_at(config, 400) == pytest.approx(0.7)


def small_config(**changes):
    base = dict(epochs=2, train_subset=300, monitor_bank=200, monitor_valid=50, seed=3)
    base.update(changes)
    return TrainConfig(**base)


@pytest.mark.slow
def test_two_epochs_give_finite_losses_a_checkpoint_and_a_log(mnist, tmp_path):
    state = train(small_config(), tmp_path, data=mnist, progress=False)
    assert state.epochs_done == 2 and state.updates_done == 6
    assert all(np.isfinite([row["d_loss"], row["g_loss"], row["parzen_valid"]]).all() for row in state.log)
    assert (tmp_path / "checkpoint.pt").exists()
    assert len((tmp_path / "train_log.csv").read_text().strip().splitlines()) == 3


@pytest.mark.slow
def test_best_generator_is_the_epoch_with_the_highest_validation_monitor(mnist, tmp_path):
    state = train(small_config(epochs=4), tmp_path / "run", data=mnist, progress=False)
    monitors = [row["parzen_valid"] for row in state.log]
    best_epoch = int(np.argmax(monitors)) + 1
    best, metadata = sampling.load_generator(tmp_path / "run" / "best_generator.pt")
    assert metadata["epochs_done"] == best_epoch and "highest per-epoch validation Parzen monitor" in metadata["selection"]
    # Runs are repeatable, so a run stopped at that epoch holds the same generator. Exact, not a
    # bound: the same process and thread count run the same operations on the same seeded data.
    stopped = train(small_config(epochs=best_epoch), tmp_path / "stopped", data=mnist, progress=False)
    for a, b in zip(stopped.generator.state_dict().values(), best.state_dict().values()):
        assert torch.equal(a, b)
    # `ganbench export --best` ships it and says how it was chosen, over the whole run.
    assert cli.main(["export", str(tmp_path / "run"), "--best", "--out", str(tmp_path / "shipped")]) == 0
    _, metadata = sampling.load_generator(tmp_path / "shipped" / "generator.pt")
    assert metadata["epochs_done"] == best_epoch and "among epochs 1-4 of its run" in metadata["selection"]
    # A log whose peak is another epoch than the file's is refused, not shipped.
    log_path = tmp_path / "run" / "train_log.csv"
    log = pd.read_csv(log_path)
    log.loc[log["epoch"] == (2 if best_epoch == 1 else 1), "parzen_valid"] = 1e9
    log.to_csv(log_path, index=False)
    with pytest.raises(GanbenchError, match="peaks at epoch"):
        export.export_run(tmp_path / "run", True, tmp_path / "refused")
    # A log cut short, damaged or emptied is refused too, with --best or without (the last epoch's log was
    # shipped as it was, and --best said "among epochs 1-1" of a 4-epoch run).
    for damage in (lambda text: text[:len(text) // 2], lambda text: "hello\x00world\n", lambda text: ""):
        log_path.write_text(damage(log.to_csv(index=False)))
        for best in (True, False):
            with pytest.raises(GanbenchError, match="train_log.csv (does not hold epochs 1..4|is not a readable|lacks)"):
                export.export_run(tmp_path / "run", best, tmp_path / "refused")


@pytest.mark.slow
def test_resume_equals_an_uninterrupted_run_bit_for_bit(mnist, tmp_path):
    whole = train(small_config(epochs=3), tmp_path / "whole", data=mnist, progress=False)
    train(small_config(epochs=1), tmp_path / "parts", data=mnist, progress=False)
    resumed = train(small_config(epochs=3), tmp_path / "parts", resume=True, data=mnist, progress=False)
    # Exact, not a bound: one process, one thread count, and the checkpoint restores every RNG,
    # so both runs do the same float32 operations on the same operands in the same order.
    for a, b in zip(whole.generator.state_dict().values(), resumed.generator.state_dict().values()):
        assert torch.equal(a, b)
    for a, b in zip(whole.discriminator.state_dict().values(), resumed.discriminator.state_dict().values()):
        assert torch.equal(a, b)
    assert [r["d_loss"] for r in whole.log] == [r["d_loss"] for r in resumed.log]


@pytest.mark.slow
def test_a_killed_process_resumes_to_the_same_weights(mnist, tmp_path):
    command = [sys.executable, "-m", "ganbench", "train", "--train-subset", "300", "--seed", "5"]
    subprocess.run(command + ["--epochs", "3", "--out", str(tmp_path / "whole")], check=True, capture_output=True)
    victim = subprocess.Popen(command + ["--epochs", "1000", "--out", str(tmp_path / "killed")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    os.kill(victim.pid, signal.SIGKILL)  # no chance to clean up: only the atomic checkpoint survives
    victim.wait()
    state, _ = load_checkpoint(checkpoint, mnist.train_x, torch.device("cpu"))
    assert 1 <= state.epochs_done < 3, "the run went too fast to be killed mid-way"
    subprocess.run(command + ["--epochs", "3", "--resume", "--out", str(tmp_path / "killed")], check=True,
                   capture_output=True)
    whole, _ = sampling.load_generator(tmp_path / "whole" / "checkpoint.pt")
    resumed, _ = sampling.load_generator(checkpoint)
    # Exact across processes: all three inherit this environment, so they run on this machine with
    # the same thread count (the same BLAS blocking), and the checkpoint restores every RNG.
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("changes, message", [
    ({"learning_rate": -0.1}, "learning_rate"),
    ({"discriminator_steps": 0}, "discriminator_steps"),
    ({"generator_loss": "wasserstein"}, "generator_loss"),
    ({"epochs": 0}, "epochs"),
])
def test_bad_config_is_a_clear_error(changes, message, mnist, tmp_path):
    with pytest.raises(GanbenchError, match=message):
        train(small_config(**changes), tmp_path, data=mnist, progress=False)


def test_resume_without_a_checkpoint_and_overwrite_refusal(mnist, tmp_path):
    with pytest.raises(GanbenchError, match="no checkpoint"):
        train(small_config(), tmp_path / "empty", resume=True, data=mnist, progress=False)
    train(small_config(epochs=1), tmp_path / "run", data=mnist, progress=False)
    with pytest.raises(GanbenchError, match="--resume"):
        train(small_config(epochs=1), tmp_path / "run", data=mnist, progress=False)


@pytest.mark.parametrize("content, message", [
    ('{"epoch": 3}', "'epoch' is not a TrainConfig field"),
    ('{"epochs": "3"}', "epochs must be int"),
    ('{"learning_rate": true}', "learning_rate must be float"),
    ('{"seed": -1}', "seed must be in 0..2"),  # accepted before, where the --seed flag refused it
    ('[3]', "holds a JSON list"),
    ('{epochs: 3}', "is not JSON"),
])
def test_bad_config_file_is_a_clear_error(content, message, mnist, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(GanbenchError, match=message):
        train(resolve_config(tmp_path / "run", False, path), tmp_path / "run", data=mnist, progress=False)


def test_config_file_then_flags_and_resume_keeps_the_stored_config(mnist, tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{"epochs": 1, "train_subset": 300, "monitor_bank": 200, "monitor_valid": 50, "seed": 5}')
    config = resolve_config(tmp_path / "run", False, path, seed=3)
    assert config == small_config(epochs=1)  # the flag (seed 3) overrides the file (seed 5)
    train(config, tmp_path / "run", data=mnist, progress=False)
    resumed = resolve_config(tmp_path / "run", True, epochs=2, seed=3)
    assert resumed == small_config(epochs=2)
    assert resolve_config(tmp_path / "run", True) == small_config(epochs=1)
    with pytest.raises(GanbenchError, match="trained with seed=3, not 4"):
        resolve_config(tmp_path / "run", True, seed=4)
    with pytest.raises(GanbenchError, match="no checkpoint"):
        resolve_config(tmp_path / "elsewhere", True)


@pytest.mark.parametrize("content", [b"not a checkpoint", None])
def test_corrupt_checkpoint_or_generator_is_a_clear_error(content, mnist, tmp_path):
    train(small_config(epochs=1), tmp_path, data=mnist, progress=False)
    checkpoint = tmp_path / "checkpoint.pt"
    whole = checkpoint.read_bytes()
    # Garbage, or an interrupted copy (half the zip archive: its directory at the end is lost).
    checkpoint.write_bytes(content if content is not None else whole[:len(whole) // 2])
    with pytest.raises(GanbenchError, match="not a readable ganbench training checkpoint"):
        train(small_config(epochs=2), tmp_path, resume=True, data=mnist, progress=False)
    with pytest.raises(GanbenchError, match="not a readable ganbench generator"):
        sampling.load_generator(checkpoint)
    torch.save({"generator": {"weight": torch.zeros(3)}}, checkpoint)
    with pytest.raises(GanbenchError, match="do not fit the paper's MNIST generator"):
        sampling.load_generator(checkpoint)
    with pytest.raises(GanbenchError, match="no 'config'"):
        train(small_config(epochs=2), tmp_path, resume=True, data=mnist, progress=False)


def test_minimax_loss_and_k_steps_run(mnist, tmp_path):
    state = train(small_config(epochs=1, generator_loss="minimax", discriminator_steps=2), tmp_path,
                  data=mnist, progress=False)
    assert np.isfinite(state.log[0]["g_loss"]) and state.updates_done == 3


@pytest.mark.parametrize("payload, message", [
    ({"model": "dbn", "config": {"monitor_samples": 10}}, "holds a dbn run, not the GAN's; add --model dbn"),
    ({"config": {"hidden": 1500}}, "does not hold a run of this trainer"),
])
def test_resuming_another_models_run_as_the_gan_is_a_one_line_error(payload, message, tmp_path, capsys):
    """`ganbench train --resume` without the baseline's --model was a TypeError traceback (exit 1)."""
    run = tmp_path / "run"
    run.mkdir()
    torch.save(payload, run / "checkpoint.pt")
    assert cli.main(["train", "--resume", "--out", str(run), "--epochs", "2"]) == 2
    assert message in capsys.readouterr().err


def test_a_diverged_run_says_so_instead_of_blaming_a_bank(tmp_path):
    """A weight gone NaN made the epoch's Parzen monitor fail with 'bank contains NaN or inf' (the user passed
    no bank); a learning rate of 1e300 was a RuntimeError traceback from the optimiser."""
    from ganbench.gan.train import check_training_converged, new_state

    config = TrainConfig(train_subset=100)
    state = new_state(config, np.zeros((100, 784), dtype=np.float32), torch.device("cpu"))
    check_training_converged(state, 1)  # finite: nothing to say
    with torch.no_grad():
        next(state.discriminator.parameters()).view(-1)[0] = float("nan")
    with pytest.raises(GanbenchError, match="training diverged in epoch 3: the discriminator's weights became NaN"):
        check_training_converged(state, 3)
    with pytest.raises(GanbenchError, match="learning_rate must be > 0 and at most 1e30"):
        TrainConfig(learning_rate=1e300).validate()


@pytest.mark.parametrize("changes, message", [
    (dict(train_subset=None, batch_size=60_000), "batch_size 60000 exceeds the 50,000 training images"),
    (dict(train_subset=300, batch_size=100, discriminator_steps=4), r"discriminator_steps \(k\) 4 exceeds the 3 batches"),
])
def test_an_epoch_without_a_batch_or_a_g_step_is_refused_before_training(changes, message, mnist, tmp_path):
    """A batch past the images gave no batch at all (an UnboundLocalError); k past an epoch's batches never
    updated G (k counts D steps within an epoch), with every g_loss NaN and no error."""
    with pytest.raises(GanbenchError, match=message):
        train(small_config(**changes), tmp_path, data=mnist, progress=False)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_train_json_is_strict_json(monkeypatch, tmp_path, capsys):
    """An epoch without a G step logs g_loss NaN, which json.dumps wrote as a bare NaN (refused by jq)."""
    import json

    from ganbench.gan import train as train_module

    row = {"epoch": 1, "d_loss": 0.69, "g_loss": float("nan"), "parzen_valid": -80.0}
    monkeypatch.setattr(train_module, "train", lambda *args, **kwargs: types_namespace(epochs_done=1, log=[row]))
    monkeypatch.setattr(train_module, "resolve_config", lambda *args, **kwargs: None)
    monkeypatch.setattr("ganbench.data.load_mnist", lambda *args: None)
    assert cli.main(["train", "--out", str(tmp_path / "run"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out, parse_constant=lambda name: pytest.fail(f"bare {name}"))
    assert printed["g_loss"] is None and printed["d_loss"] == 0.69


def types_namespace(**fields):
    from types import SimpleNamespace

    return SimpleNamespace(**fields)


def test_a_monitor_width_the_scorer_refuses_is_refused_by_the_config():
    """monitor_sigma 1e-300 passed the config and was refused by the scorer after an epoch had trained."""
    with pytest.raises(GanbenchError, match="monitor_sigma must be >= 5.3e-155"):
        small_config(monitor_sigma=1e-300).validate()


def _flip_a_byte_of_a_tensor(path) -> None:
    """One byte in the middle of the largest tensor of a torch zip file, as a disk or a copy may damage it."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        member = max((info for info in archive.infolist() if "/data/" in info.filename), key=lambda info: info.file_size)
        with open(path, "rb") as handle:  # the local header: 30 bytes, then the name and the extra field
            handle.seek(member.header_offset + 26)
            name_length, extra_length = np.frombuffer(handle.read(4), dtype="<u2")
    data_start = member.header_offset + 30 + int(name_length) + int(extra_length)
    raw = bytearray(path.read_bytes())
    raw[data_start + member.file_size // 2] ^= 0x40
    path.write_bytes(bytes(raw))


def test_a_damaged_weights_file_or_checkpoint_is_refused_not_loaded(mnist, tmp_path):
    """torch.load reads tensors without checking their bytes: a flipped bit in a weight loaded as 1e37 and
    `sample` wrote samples off by up to 1.0 (exit 0); a flipped byte in a checkpoint resumed another state.
    The zip members' CRC-32s are checked first."""
    train(small_config(epochs=1), tmp_path, data=mnist, progress=False)
    generator = tmp_path / "best_generator.pt"
    sampling.load_generator(generator)  # whole: loads
    for path in (generator, tmp_path / "checkpoint.pt"):
        _flip_a_byte_of_a_tensor(path)
    with pytest.raises(GanbenchError, match=r"best_generator.pt is damaged \(its part .* fails its checksum\)"):
        sampling.load_generator(generator)
    with pytest.raises(GanbenchError, match=r"checkpoint.pt is damaged"):
        train(small_config(epochs=2), tmp_path, resume=True, data=mnist, progress=False)
    # A file torch saved without CRCs (each member's stored as 0) is whole: it loads.
    import torch.utils.serialization

    config = torch.utils.serialization.config.save
    weights = models.Generator().state_dict()
    saved_crc, config.compute_crc32 = config.compute_crc32, False
    try:
        torch.save({"generator": weights}, tmp_path / "no_crc.pt")
    finally:
        config.compute_crc32 = saved_crc
    loaded, _ = sampling.load_generator(tmp_path / "no_crc.pt")
    assert all(torch.equal(loaded.state_dict()[name], tensor) for name, tensor in weights.items())


def test_a_checkpoint_with_nan_weights_is_damaged_not_a_diverged_epoch(mnist, tmp_path):
    """Resuming a checkpoint whose weights held NaN trained a whole epoch, then blamed the learning rate."""
    train(small_config(epochs=1), tmp_path, data=mnist, progress=False)
    payload = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    next(iter(payload["generator"].values())).view(-1)[0] = float("nan")
    torch.save(payload, tmp_path / "checkpoint.pt")
    with pytest.raises(GanbenchError, match="checkpoint.pt holds NaN or inf weights"):
        train(small_config(epochs=2), tmp_path, resume=True, data=mnist, progress=False)


def test_two_trainings_into_one_folder_are_refused_and_a_time_budget_says_it_stopped(mnist, tmp_path, capsys,
                                                                                      monkeypatch):
    """Two `ganbench train` into one --out both exited 0, one's checkpoint and the other's best epoch left there;
    --max-minutes stopped a run without a word. A Ctrl-C told a baseline's run to resume without its --model."""
    from ganbench import data, runs
    from ganbench.cli.gan import train_interrupted

    monkeypatch.setattr(data, "load_mnist", lambda *args, **kwargs: mnist)
    run = tmp_path / "run"
    options = ["--epochs", "2", "--train-subset", "300", "--seed", "3", "--out", str(run)]
    holder = runs.lock_run_folder(run)  # another training, in this process's stead
    assert cli.main(["train", *options]) == 2
    assert "another `ganbench train` (pid " in capsys.readouterr().err
    holder.release()
    monkeypatch.setattr(cli.gan, "_train", lambda args: 0)  # the lock alone: taken and given back
    assert cli.main(["train", *options]) == 0
    runs.lock_run_folder(run).release()  # free again once the command has ended
    monkeypatch.undo()
    assert cli.main(["train", "--resume", "--out", str(tmp_path / "typo")]) == 2  # refused: leaves no folder
    assert "no checkpoint at" in capsys.readouterr().err and not (tmp_path / "typo").exists()
    monkeypatch.setattr(data, "load_mnist", lambda *args, **kwargs: mnist)
    capsys.readouterr()
    timed = tmp_path / "timed"
    assert train(small_config(epochs=3), timed, data=mnist, progress=False, max_minutes=1e-9).epochs_done == 1
    assert (f"stopped after epoch 1 of 3: --max-minutes 1e-09 has passed; continue with `ganbench train --resume "
            f"--out {timed}`") in capsys.readouterr().err
    run.mkdir(exist_ok=True)  # the lock-only command above made it and, leaving it empty, removed it
    (run / "checkpoint.pt").write_bytes(b"")
    for model, flag in (("cae", " --model cae"), ("gan", "")):
        assert f"`ganbench train{flag} --resume --out {run}`" in train_interrupted(types_namespace(out=run, model=model))
