"""When a probe pays: the trained router's three decision rules, and which one serves.

- ``probe``: k samples first, then the model over text + probe features; configs that reuse
  the probe's samples are charged only for the samples they still draw.
- ``blind``: the model over text features alone, no probe. On a small policy a probe of k
  samples can cost more than the cheapest config and tell little (its samples agree with
  each other rarely), and then a router that always probes loses to plain chain-of-thought.
- ``fixed``: the config with the best training accuracy - lam x cost, for every question.
  The best fixed config is a router too; a learned rule has to beat it to be served.

Which rule serves at a given lam is measured, not assumed: ``ratts.router.train`` cross-fits
the three on the training problems (grouped folds; each fold's rules are fitted without its
problems) and scores each by its realized mean accuracy - lam x cost over a grid of lam,
the probe's cost included where it runs. This table is what the artifact keeps. A rule
serves only if no simpler one (fixed, then blind, then probe) comes within one standard error
of it (the paired SE of their difference over the scored problems): the one-standard-error
rule of cross-validated model selection, since on a few dozen problems a hair's lead is
noise, and the simpler rule is the safer bet (it spends no probe it cannot use).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Mode = Literal["fixed", "blind", "probe"]
MODES: tuple[Mode, ...] = ("fixed", "blind", "probe")  # simplest first: ties go left
PROBE: Mode = "probe"


@dataclass(frozen=True, slots=True)
class ModeTable:
    """Per lam on a grid (ascending, in ``unit``): each rule's cross-fitted value (mean
    accuracy - lam x mean cost), the standard error of each rule's paired difference to
    the best rule there (``margins``; none: no margin), and the rule that serves."""

    unit: str
    lams: tuple[float, ...]
    values: Mapping[str, tuple[float, ...]]
    problems: int
    margins: Mapping[str, tuple[float, ...]] | None = None

    @property
    def modes(self) -> tuple[Mode, ...]:
        return tuple(self._best(i) for i in range(len(self.lams)))

    def _best(self, i: int) -> Mode:
        """The simplest rule within its margin of the best value at grid point ``i``."""
        present = [m for m in MODES if m in self.values]
        top = max(self.values[m][i] for m in present)
        for mode in present:
            margin = self.margins[mode][i] if self.margins and mode in self.margins else 0.0
            if self.values[mode][i] >= top - margin - 1e-12:
                return mode
        return present[-1]

    def mode_at(self, lam: float | None) -> Mode:
        """The rule at the largest grid lam <= ``lam`` (None and 0: accuracy alone)."""
        if not self.lams:
            return PROBE
        i = max(0, bisect.bisect_right(self.lams, lam or 0.0) - 1)
        return self._best(i)

    def as_dict(self) -> dict[str, Any]:
        """Plain data (the skops artifact trusts builtins only)."""
        return {
            "unit": self.unit,
            "lams": list(self.lams),
            "values": {m: list(v) for m, v in self.values.items()},
            "margins": {m: list(v) for m, v in (self.margins or {}).items()},
            "problems": self.problems,
            "modes": list(self.modes),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModeTable:
        return cls(
            unit=str(data["unit"]),
            lams=tuple(float(x) for x in data["lams"]),
            values={str(m): tuple(float(x) for x in v) for m, v in data["values"].items()},
            problems=int(data.get("problems", 0)),
            margins={str(m): tuple(float(x) for x in v) for m, v in data["margins"].items()}
            if data.get("margins")
            else None,
        )


def summary(tables: Mapping[str, ModeTable]) -> dict[str, Any]:
    """What ``ratts router show`` prints: per unit, the rule over each lam range."""
    out: dict[str, Any] = {}
    for unit, table in tables.items():
        spans: list[str] = []
        modes = table.modes
        for i, mode in enumerate(modes):
            if i == 0 or modes[i - 1] != mode:
                spans.append(f"{mode} from lam {table.lams[i]:.3g}")
        out[unit] = {"problems": table.problems, "rule": spans}
    return out


def paired_margins(per_problem: Mapping[str, Any]) -> dict[str, tuple[float, ...]]:
    """Per rule and grid point, the standard error of its paired difference to the best
    rule there, from ``per_problem[mode]``: an array problems x grid of realized values."""
    import numpy as np

    modes = [m for m in MODES if m in per_problem]
    values = np.stack([np.asarray(per_problem[m], dtype=float) for m in modes])  # m x p x g
    n = values.shape[1]
    best = values.mean(axis=1).argmax(axis=0)  # per grid point
    top = values[best, :, np.arange(values.shape[2])].T  # p x g
    out: dict[str, tuple[float, ...]] = {}
    for j, mode in enumerate(modes):
        diff = values[j] - top
        se = diff.std(axis=0, ddof=1) / np.sqrt(n) if n > 1 else np.zeros(values.shape[2])
        out[mode] = tuple(float(x) for x in se)
    return out


def grid(costs: Sequence[float], size: int = 40) -> list[float]:
    """0 and a geometric grid of lam spanning 'cost barely matters' to 'only cost matters'
    for configs costing ``costs``."""
    import numpy as np

    positive = [c for c in costs if c > 0]
    if not positive:
        return [0.0]
    lo, hi = 1e-4 / max(positive), 10.0 / min(positive)
    return [0.0, *np.geomspace(lo, hi, size).tolist()]
