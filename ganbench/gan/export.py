"""Ship a training run's generator: the last epoch's, or the one with the best validation monitor."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ganbench import atomic, runs
from ganbench.errors import GanbenchError
from ganbench.gan import sampling
from ganbench.gan.train import (
    BEST_GENERATOR_NAME,
    CHECKPOINT_NAME,
    LOG_NAME,
    best_epoch_selection,
)


def export_run(run: Path, best: bool, out: Path) -> Path:
    """Write ``out/generator.pt`` (and the run's log beside it) from a ``ganbench train`` folder."""
    run, out = Path(run), Path(out)
    checkpoint = run / (BEST_GENERATOR_NAME if best else CHECKPOINT_NAME)
    if not checkpoint.exists():
        raise GanbenchError(f"no {checkpoint.name} in {run}; pass the --out folder of a `ganbench train` run"
                            + (" that logged its Parzen monitor (or drop --best)" if best else ""))
    _, last = sampling.load_generator(run / CHECKPOINT_NAME)  # the run's epochs: its log must hold them all
    log = runs.read_log(run / LOG_NAME, last["epochs_done"])
    selection = _best_epoch_selection(log, run / LOG_NAME, checkpoint) if best else None
    files = {out / "generator.pt": sampling.exported_generator(checkpoint, selection)}
    if (run / LOG_NAME).resolve() != (out / LOG_NAME).resolve():
        files[out / LOG_NAME] = (run / LOG_NAME).read_bytes()
    atomic.write_set(files)  # the generator and its log: both new or both old
    return out / "generator.pt"


def _best_epoch_selection(log: pd.DataFrame, log_path: Path, best_path: Path) -> str:
    """How the best epoch was chosen, over the whole run so far; checks the log agrees with the file."""
    best = log.loc[log["parzen_valid"].idxmax()]
    _, metadata = sampling.load_generator(best_path)
    runs.check_best_is_logged_peak(log, log_path, best_path, metadata["epochs_done"])
    return best_epoch_selection(best["parzen_valid"], metadata["config"], int(log["epoch"].max()))
