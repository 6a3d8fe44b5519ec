"""False-rejection and false-acceptance rates of the controller's decision rule, with and
without the recheck of a marginal rejection, under a normal model of the validation noise.

    python benchmarks/controller/decision_rule.py      # writes decision_rule.md

A step whose true drop from the baseline is ``delta`` is measured as ``delta + e`` with
``e ~ N(0, sigma)``, ``sigma`` the standard error of the validation accuracy (the
controller's ``RunState.noise``). Without recheck it is accepted when the measured drop is
at most ``max_drop``. With recheck a measured drop in ``(max_drop, max_drop + sigma]`` is
measured again after one more epoch (an independent draw, the true drop assumed unchanged:
a conservative model, since the extra epoch usually recovers accuracy) and judged on that.
The rates are exact for this model (normal CDF), checked by a Monte Carlo run.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent


def phi(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def p_reject(delta_in_sigma: float, recheck: bool) -> float:
    """P(rejected) for a true drop ``max_drop + delta_in_sigma * sigma``."""
    d = delta_in_sigma
    first_reject = 1.0 - phi(-d)                  # measured drop > max_drop
    if not recheck:
        return first_reject
    marginal = phi(1.0 - d) - phi(-d)             # max_drop < measured <= max_drop + sigma
    return (1.0 - phi(1.0 - d)) + marginal * first_reject


def monte_carlo(delta_in_sigma: float, recheck: bool, n: int = 200_000, seed: int = 0) -> float:
    rng = random.Random(seed)
    rejected = 0
    for _ in range(n):
        m = delta_in_sigma + rng.gauss(0.0, 1.0)
        if m > 0 and recheck and m <= 1.0:
            m = delta_in_sigma + rng.gauss(0.0, 1.0)
        rejected += m > 0
    return rejected / n


def main() -> None:
    rows = ["| true drop (max_drop + k sigma), k | P(reject), no recheck | P(reject), recheck | "
            "Monte Carlo, recheck |", "| ---: | ---: | ---: | ---: |"]
    for k in (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0):
        rows.append(f"| {k:+.1f} | {p_reject(k, False):.3f} | {p_reject(k, True):.3f} | "
                    f"{monte_carlo(k, True):.3f} |")
    text = (__doc__.split("\n\n", 1)[0] + "\n\n" + "\n".join(rows) + "\n\n"
            "k < 0: the step is truly within the bound, so P(reject) is the false-rejection rate; "
            "k > 0: it is not, so 1 - P(reject) is the false-acceptance rate.\n")
    (HERE / "decision_rule.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
