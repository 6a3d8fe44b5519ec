"""The comparison's run records (``runs/*.json``) and the statistics read from them, in one place:
which network a record belongs to, a run's validation score (PROTOCOL.md rule 2), mean and
sample SD, Welch's p-value (rule 3). ``run.py`` writes records; ``render.py`` and
``rederive.py`` read them."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNS = HERE / "runs"
# The VGG-16-BN x0.25 experiment: the goal's network, and the one records default to.
EXPERIMENT = "converged_vgg16_w025"


def experiment_of(record: dict) -> str:
    """A run record's experiment preset: runs recorded before they named theirs are the VGG's."""
    return record.get("experiment", EXPERIMENT)


def load(pattern: str = "*.json") -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(RUNS.glob(pattern))]


def final_val(run: dict) -> float | None:
    """The run's score (PROTOCOL.md rule 2): the final epoch's validation accuracy, in percent."""
    curve = [v for v in run.get("val_curve") or [] if v is not None]
    return 100 * curve[-1] if curve else None


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def welch_p(a: list[float], b: list[float]) -> float | None:
    """Welch's two-sided t-test p-value; None with fewer than two values a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    from scipy import stats

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
