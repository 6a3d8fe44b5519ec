"""A real two-process ``ddp`` run on CPU (gloo): the same statistics as one process.

Each rank sees half of the validation data (Lightning's DistributedSampler: rank r takes
samples r, r+2, ...) in batches of 16; the single process sees all of it in batches of
32, so the calibration set (first two batches) is the same 64 samples in both runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from stats_helpers import (  # noqa: E402
    DDP_BATCH_PER_RANK,
    collected,
    ddp_collectors,
    ddp_data,
    ddp_model,
    trainer,
)

SCRIPT = Path(__file__).parents[1] / "scripts" / "stats_ddp.py"


@pytest.mark.slow
def test_two_ddp_ranks_match_one_process(tmp_path):
    env = dict(os.environ, PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")
    env.pop("LOCAL_RANK", None)
    proc = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], env=env,
                          cwd=Path(__file__).parents[2], capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world_size"] for r in ranks] == [2, 2]
    assert [r["num_val_batches"] for r in ranks] == [[4], [4]]  # each rank: half of 128 / 16

    collectors = ddp_collectors()
    trainer(collectors).validate(ddp_model(), ddp_data(2 * DDP_BATCH_PER_RANK), verbose=False)
    single = [collected(c) for c in collectors]
    single_scores = [c.scores("conditional_entropy") for c in collectors]

    for rank in ranks:
        assert rank["has_statistics"] == [True, True]
        for got, want in zip(rank["stats"], single, strict=True):
            assert list(got) == list(want)
            for layer in want:
                g, w = got[layer], want[layer]
                assert torch.equal(g["counts"], w["counts"]), layer
                assert g["counts"].sum() > 0
                assert torch.equal(g["zeros"], w["zeros"]) and torch.equal(g["elements"], w["elements"])
                assert torch.equal(g["low"], w["low"]) and torch.equal(g["high"], w["high"])
                torch.testing.assert_close(g["activation_sum"], w["activation_sum"], rtol=1e-9, atol=1e-9)
        for got, want in zip(rank["scores"], single_scores, strict=True):
            for layer in want:
                torch.testing.assert_close(got[layer], want[layer])
    # every sample counted exactly once over the two ranks
    assert single[0]["net.features.0"]["counts"][0].sum() == 128
