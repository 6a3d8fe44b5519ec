"""Validate a small network with two EntropyStatistics under ``strategy="ddp"`` on two CPU
processes and save what every rank ends with (``python tests/scripts/stats_ddp.py OUT_DIR``);
Lightning re-launches this same command for rank 1. Used by tests/statistics/test_ddp.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "statistics"))
from stats_helpers import (  # noqa: E402
    DDP_BATCH_PER_RANK,
    collected,
    ddp_collectors,
    ddp_data,
    ddp_model,
    trainer,
)


def main(out_dir: str) -> None:
    torch.set_num_threads(1)
    collectors = ddp_collectors()
    t = trainer(collectors, strategy="ddp", devices=2)
    t.validate(ddp_model(), ddp_data(DDP_BATCH_PER_RANK), verbose=False)
    result = {"rank": t.global_rank, "world_size": t.world_size,
              "num_val_batches": list(t.num_val_batches),
              "has_statistics": [c.has_statistics for c in collectors],
              "stats": [collected(c) for c in collectors],
              "scores": [c.scores("conditional_entropy") for c in collectors]}
    torch.save(result, Path(out_dir) / f"rank{t.global_rank}.pt")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit("usage: python tests/scripts/stats_ddp.py OUT_DIR")
    main(sys.argv[1])
