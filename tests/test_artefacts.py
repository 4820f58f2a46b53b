"""The paper's artefacts end to end: a Table 1 run, its markdown and provenance, and every figure."""
import dataclasses
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ganbench import SHIPPED_GENERATOR
from ganbench.paper import figures, table1


@pytest.mark.slow
def test_reproduce_writes_a_consistent_table_with_provenance(mnist, tmp_path):
    config = table1.Table1Config(rows=("training_images",), backend="torch", device="cpu")
    result = table1.reproduce(config, ["ganbench", "reproduce", "table1"])
    measured = next(row for row in result["table"] if row.get("key") == "training_images")
    # The committed table holds the same row, measured the same way: the numbers agree within
    # the row's stored tolerance (float32 rounding only).
    committed = json.loads((Path(__file__).resolve().parent.parent / "results" / "table1.json").read_text())
    stored = next(row for row in committed["table"] if row.get("key") == "training_images")["mnist"]
    assert abs(measured["mnist"]["mean"] - stored["mean"]) <= stored["tolerance_nats"]
    assert measured["mnist"]["sigma"] == stored["sigma"]
    origin = result["provenance"]
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).parent).stdout.strip()
    assert origin["git_commit"] == head and isinstance(origin["git_dirty"], bool)
    assert origin["command"] == "ganbench reproduce table1"
    table1.write_outputs(result, tmp_path)
    markdown = (tmp_path / "table1.md").read_text()
    cell = f"{measured['mnist']['mean']:.1f} ± {measured['mnist']['standard_error']:.1f}"
    assert "| Training images (10,000) | measured | " + cell in markdown
    assert "| Adversarial nets | published | 225 ± 2.0 |" in markdown
    assert json.loads((tmp_path / "table1.json").read_text())["table"] == json.loads(json.dumps(result["table"]))


@pytest.mark.slow
def test_all_figures_are_written_from_the_shipped_generator(mnist, tmp_path):
    # A fifth of the training split keeps the memorisation passes short; the figures are the same kind.
    small = dataclasses.replace(mnist, train_x=mnist.train_x[:10_000], test_x=mnist.test_x[:2_000])
    paths = figures.all_figures(str(SHIPPED_GENERATOR), small, tmp_path, backend="torch")[0]
    assert set(paths) >= {"figure2", "figure3", "histogram", "samples"}
    for path in paths.values():
        if path is None:
            continue
        pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
        assert pixels.std() > 5, f"{path} is blank"
