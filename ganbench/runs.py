"""Checks every training run shares (the GAN's and the baselines'), each a one-line error before any epoch."""
from __future__ import annotations

import os
import sys
from pathlib import Path

from ganbench.errors import GanbenchError


def check_budget(max_minutes: float | None) -> None:
    """``--max-minutes``: a positive number of minutes (NaN, 0 and negatives stop nothing meaningfully)."""
    if max_minutes is not None and not max_minutes > 0:
        raise GanbenchError(f"max_minutes (--max-minutes) must be > 0, got {max_minutes}")


def stopped_for_time(out_dir, epochs_done: int, epochs: int, max_minutes: float, model: str = "gan") -> None:
    """Say on stderr that ``--max-minutes`` ended the run early and how to go on (it stopped without a word)."""
    flag = "" if model == "gan" else f" --model {model}"
    print(f"ganbench: stopped after epoch {epochs_done} of {epochs}: --max-minutes {max_minutes:g} has passed; "
          f"continue with `ganbench train{flag} --resume --out {out_dir}`", file=sys.stderr)


def check_resumed_epochs(out_dir: Path, epochs_done: int, epochs: int) -> None:
    """``--epochs`` counts every epoch of the run, not the ones to add: a resumed run asks for at least as many."""
    if epochs < epochs_done:
        raise GanbenchError(f"{out_dir} has already trained {epochs_done} epochs, more than epochs (--epochs) "
                            f"{epochs}; it counts all epochs, not the ones to add: pass at least {epochs_done}")


def check_subset(train_subset: int | None, available: int) -> None:
    """``--train-subset`` takes the first N training images: N beyond them would silently mean all of them."""
    if train_subset is not None and train_subset > available:
        raise GanbenchError(f"train_subset (--train-subset) {train_subset} exceeds the {available:,} training images; "
                            "pass at most that many, or drop it to use them all")


def check_monitor_images(monitor_valid: int, available: int) -> None:
    """The monitor scores the first ``monitor_valid`` validation images: more than there are would silently mean all."""
    if monitor_valid > available:
        raise GanbenchError(f"monitor_valid {monitor_valid} exceeds the {available:,} validation images; pass at most "
                            "that many")


def warn_if_best_lost(best_path: Path, log: list[dict], readable) -> None:
    """On resume: the best epoch's weights file, written when that epoch ended, cannot be rebuilt from the
    checkpoint (which holds the last epoch). When it is gone or unreadable, say so now, not at ``export --best``.
    ``readable`` reads the file and nothing else: a model built to load it would draw from the RNGs just restored."""
    rows = [row for row in log if row.get("parzen_valid") is not None and selectable(row)]
    if not rows:
        return
    try:
        readable(best_path)
    except GanbenchError:
        best = max(rows, key=lambda row: row["parzen_valid"])
        print(f"ganbench: warning: {best_path} is missing or damaged; the best epoch so far (epoch {best['epoch']}, "
              f"monitor {best['parzen_valid']:.1f}) cannot be rebuilt from the checkpoint: `export --best` refuses "
              "until a later epoch beats it (export without --best takes the last epoch)", file=sys.stderr)


def read_log(path: Path, epochs_done: int):
    """A run's per-epoch log, as export ships it: one row per epoch 1..``epochs_done`` (the checkpoint's), each
    with a finite ``epoch`` and ``parzen_valid``; a damaged, truncated or foreign log is a one-line error."""
    import numpy as np
    import pandas as pd

    fix = "it is the run's own record: restore it, or resume the run for one epoch to write it again"
    try:
        log = pd.read_csv(path)
    except FileNotFoundError:
        raise GanbenchError(f"no {path.name} in {path.parent}; pass the --out folder of a `ganbench train` run") from None
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise GanbenchError(f"{path} is not a readable training log ({type(error).__name__}); {fix}") from None
    if not {"epoch", "parzen_valid"} <= set(log.columns):
        raise GanbenchError(f"{path} lacks the epoch and parzen_valid columns of a training log; {fix}")
    epochs = pd.to_numeric(log["epoch"], errors="coerce").to_numpy(dtype=np.float64)
    monitor = pd.to_numeric(log["parzen_valid"], errors="coerce").to_numpy(dtype=np.float64)
    if not np.array_equal(epochs, np.arange(1, epochs_done + 1)) or not np.all(np.isfinite(monitor)):
        raise GanbenchError(f"{path} does not hold epochs 1..{epochs_done} of the run with a finite monitor each "
                            f"(damaged or cut short); {fix}")
    return log


def check_finite_weights(model, path, fix: str) -> None:
    """A model file whose weights hold NaN or inf (a diverged run saved, or a damaged file) draws NaN samples
    that a command would otherwise write out as a bank: refused when loaded, naming the file and the tensor."""
    import torch

    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise GanbenchError(f"{path} holds NaN or inf weights ({name}): the run diverged or the file is damaged; "
                                f"{fix}")


# Stacked models (the DBN's and the CAE's logs have a "layer" column) are whole only once their top layer trains:
# the best epoch is chosen among those epochs (the best of a 2-epoch DBN run, both first-layer epochs, shipped an
# untrained top RBM as "the highest monitor of its run").
TOP_LAYER = 2


def selectable(row) -> bool:
    """Whether an epoch's log row may be the run's best: any epoch of a model without layers, else a top-layer one."""
    layer = row.get("layer")
    return layer is None or layer != layer or int(layer) == TOP_LAYER  # layer != layer: NaN, a row without one


def selectable_rows(log):
    """The rows of a run's log (a DataFrame) that may be its best epoch (``selectable``)."""
    return log[log["layer"] == TOP_LAYER] if "layer" in log.columns else log


def check_best_is_logged_peak(log, log_path, best_path, best_epoch: int) -> None:
    """The best-epoch file must hold the epoch where the run's log peaks (among its top-layer epochs, for a
    stacked model): a kill between writing the best file and the checkpoint (or the log) leaves a best file of an
    epoch the log does not hold, which export would otherwise ship as the best 'among' the logged epochs."""
    candidates = selectable_rows(log)
    if candidates.empty:
        raise GanbenchError(f"{log_path} holds no epoch of the model's top layer, so no best epoch; train the run "
                            "on, or export without --best")
    peak = int(candidates.loc[candidates["parzen_valid"].idxmax(), "epoch"])
    if best_epoch != peak:
        raise GanbenchError(f"{best_path} holds epoch {best_epoch} but {log_path} peaks at epoch {peak}; resume the "
                            "run for one epoch to rewrite it, or export without --best")


def write_log(path, log: list[dict]) -> None:
    """The run's per-epoch log as CSV, atomically. Written after each epoch's checkpoint and again from the
    checkpoint when a run resumes: a kill between the two writes left a log one epoch short, which resuming a
    finished run never rewrote (and export refuses)."""
    import pandas as pd

    from ganbench import atomic

    atomic.write_text(path, pd.DataFrame(log).to_csv(index=False))


LOCK_NAME = ".ganbench-train.lock"


class RunFolderLock:
    """An exclusive lock on a run folder, held by an open file until the process ends (or ``release``).

    ``made``: the folder the lock made. A command that fails before writing anything there (a mistyped
    ``--resume --out``) leaves no folder behind: ``release`` removes it while it holds only the lock file."""

    def __init__(self, handle, made: Path | None = None):
        self.handle, self.made = handle, made

    def release(self) -> None:
        if self.handle is None:
            return
        if self.made is not None and [path.name for path in self.made.iterdir()] == [LOCK_NAME]:
            (self.made / LOCK_NAME).unlink()
            self.made.rmdir()
        self.handle.close()  # closing the file drops its lock
        self.handle = None


def lock_run_folder(out_dir) -> RunFolderLock:
    """Lock ``out_dir`` for one `ganbench train` (the folder is made if missing), or a one-line error when another
    process holds it: two runs in one folder overwrote each other's checkpoint and best epoch, both exiting 0,
    and `export --best` then shipped one run's generator with the other's log. The lock is the kernel's
    (``flock``): it goes with its process, however the process ends, so a killed run leaves nothing stale."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (the checkpoint's own checks remain)
        return RunFolderLock(None)
    folder = Path(out_dir)
    made = None if folder.is_dir() else folder
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / LOCK_NAME, "a+")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        holder = handle.read().strip()
        handle.close()
        raise GanbenchError(f"another `ganbench train` ({holder or 'a process'}) is training into {folder}; wait for it "
                            "to end, or choose another --out") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}\n")
    handle.flush()
    return RunFolderLock(handle, made)
