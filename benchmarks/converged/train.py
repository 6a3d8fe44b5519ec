"""Train a converged baseline, across as many sessions as it takes, then finish it.

    python benchmarks/converged/train.py converged_resnet20 --name resnet20_seed0
    python benchmarks/converged/train.py park      # before a session ends; commit partial/

``train.py`` runs ``pl-prune experiment=<preset> hydra.run.dir=outputs/<name>`` (extra
arguments are Hydra overrides). The app resumes from ``outputs/<name>/checkpoints/last.ckpt``
when it is there; on a fresh checkout, where ``outputs/`` is empty, the run's parked copy
in ``partial/<name>/`` is put back first. When the schedule has run to its end,
``finish.py`` writes the state dict, the curve and ``baselines.json``, and the parked copy
is removed.

``park`` copies each unfinished run's ``checkpoints/`` (``last.ckpt`` and the best epoch,
which the app tests at the end) and CSV logs to ``partial/``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
import parking  # noqa: E402  (benchmarks/parking.py)

OUTPUTS, PARTIAL = HERE / "outputs", HERE / "partial"
RESUME_POINTS = ("checkpoints/last.ckpt",)
ALSO = ("checkpoints", "csv")  # the best epoch's checkpoint is the one tested at the end


def finished(name: str) -> bool:
    return (OUTPUTS / name / "results.json").is_file()


def park() -> list[Path]:
    return parking.park(OUTPUTS, PARTIAL, RESUME_POINTS, finished, also=ALSO)


def train(experiment: str, name: str, overrides: list[str]) -> None:
    folder = OUTPUTS / name
    parking.unpark(folder, PARTIAL, RESUME_POINTS)
    subprocess.run([sys.executable, "-m", "pl_pruning", f"experiment={experiment}",
                    f"hydra.run.dir={folder}", "callbacks.rich_progress_bar=null", *overrides],
                   check=True, cwd=ROOT)
    from finish import finish

    finish(name)
    parking.release(PARTIAL, name)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", help="an experiment preset (converged_vgg16_w025, converged_resnet20), or park")
    p.add_argument("--name", help="the run's folder under outputs/ and partial/ (default: <preset>_seed0)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides for pl-prune")
    args = p.parse_args(argv)
    if args.experiment == "park":
        park()
        return
    train(args.experiment, args.name or f"{args.experiment.removeprefix('converged_')}_seed0", args.overrides)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main()
