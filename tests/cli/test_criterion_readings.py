"""Each reading of the conditional-entropy criterion is one ``pruning.controller.criterion=<name>`` away."""

import json
import subprocess

import pytest

from pl_pruning.cli import app

READINGS = ["conditional_entropy", "normalized_conditional_entropy", "mutual_information"]


def test_every_reading_passes_the_check_before_the_first_job():
    app.check_overrides(["-m", f"pruning.controller.criterion={','.join(READINGS)}", "seed=0,1,2"])


@pytest.mark.slow
def test_normalized_conditional_entropy_prunes_digits_through_the_command_line(cli, tmp_path):
    cmd = [*cli, f"hydra.run.dir={tmp_path}", "pruning.controller.criterion=normalized_conditional_entropy",
           "trainer.max_epochs=1", "pruning.fit.max_epochs=2", "pruning.controller.final_epochs=0",
           "pruning.controller.max_steps=1", "measure.latency=false", "callbacks=none", "logger=none"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    report = json.loads((tmp_path / "pruning_report.json").read_text())
    assert results["config"]["pruning"]["controller"]["criterion"] == "normalized_conditional_entropy"
    assert report["criterion"] == "normalized_conditional_entropy"
    assert report["history"][0]["phase"] == "baseline"
    assert report["history"][1]["phase"] in ("global", "layerwise")  # a step judged on its scores
