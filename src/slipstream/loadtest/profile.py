"""Load shapes: a scenario is a piecewise-linear level over time; the level is users or requests/s.

A :class:`Profile` is a start level and stages; each stage moves the level linearly to its own level over its
duration (a hold is a stage that keeps the level). The drivers read it two ways:

- closed loop: :meth:`Profile.users_at` — how many users should be working at time ``t``;
- open loop: :meth:`Profile.arrivals` — the exact intended send times. Arrival ``k`` is due when the integral
  of the rate reaches ``k``; on a linear stage that integral is quadratic, solved in closed form (a form that stays
  stable when the rate is flat or starts at zero). A constant ``R`` req/s over ``D`` seconds gives exactly
  ``R * D`` arrivals at ``0, 1/R, 2/R, ...``, independent of how busy the machine is: the schedule is fixed
  before the run and latency is measured from it (no coordinated omission).

The scenarios, for a level ``L`` and a duration ``D``:

============  =====================================================================================
baseline      ``L`` held for ``D`` (default one user: the latency of an idle target)
peak          ramp 0 -> ``L`` (default 10% of ``D``), then hold ``L``
stress        four steps, ``L/2``, ``L``, ``1.5 L``, ``2 L``, each a quarter of ``D`` (ramp 10% of the step)
spike         ``L`` for 40%, a jump to ``5 L`` held for 20%, back to ``L`` for 40%
soak          ramp 0 -> ``L`` (default 5% of ``D``), hold ``L``; long by default (10 minutes)
custom        ramp 0 -> ``L`` over ``--ramp`` (default none), hold ``L``
============  =====================================================================================
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = [
    "DEFAULT_DURATIONS",
    "RAMPED_SCENARIOS",
    "SCENARIOS",
    "SPIKE_FACTOR",
    "Profile",
    "Stage",
    "constant",
    "scenario_profile",
]

SCENARIOS = ("baseline", "peak", "stress", "spike", "soak", "custom")
DEFAULT_DURATIONS: dict[str, float] = {
    "baseline": 10.0,
    "peak": 30.0,
    "stress": 60.0,
    "spike": 30.0,
    "soak": 600.0,
    "custom": 10.0,
}
SPIKE_FACTOR = 5.0
_DEFAULT_RAMP_SHARE = {"peak": 0.10, "soak": 0.05, "custom": 0.0}
RAMPED_SCENARIOS = tuple(_DEFAULT_RAMP_SHARE)  # the ones whose ramp can be set


@dataclass(frozen=True, slots=True)
class Stage:
    duration: float
    level: float  # reached at the end of the stage, linearly from the level before it


@dataclass(frozen=True, slots=True)
class Profile:
    stages: tuple[Stage, ...]
    start_level: float = 0.0

    @property
    def duration(self) -> float:
        return math.fsum(stage.duration for stage in self.stages)

    @property
    def peak_level(self) -> float:
        return max([self.start_level, *(stage.level for stage in self.stages)])

    def level_at(self, t: float) -> float:
        level = self.start_level
        for stage in self.stages:
            if t < stage.duration:
                return level + (stage.level - level) * (t / stage.duration)
            t -= stage.duration
            level = stage.level
        return level

    def users_at(self, t: float) -> int:
        """Users working at ``t``: the level rounded up, so a ramp starts with one user, not none."""
        return math.ceil(self.level_at(t) - 1e-9)

    def arrivals(self) -> Iterator[float]:
        """Intended send times (seconds from the start) of an open-loop run, ascending, all before the end."""
        k = 0
        before = 0.0  # arrivals owed by the stages already passed (a real number)
        offset = 0.0
        a = self.start_level
        for stage in self.stages:
            b, span = stage.level, stage.duration
            if span <= 0:
                a = b
                continue
            slope = (b - a) / span
            owed = a * span + slope * span * span / 2
            while (x := k - before) < owed:
                # Solve a*u + slope*u^2/2 = x for u in its stable form.
                u = 0.0 if x <= 0 else 2 * x / (a + math.sqrt(max(0.0, a * a + 2 * slope * x)))
                if u >= span:
                    break
                yield offset + u
                k += 1
            before += owed
            offset += span
            a = b


def constant(level: float, duration: float) -> Profile:
    return Profile(stages=(Stage(duration, level),), start_level=level)


def scenario_profile(name: str, level: float, duration: float, ramp: float | None = None) -> Profile:
    """The shape of scenario ``name`` at level ``level`` over ``duration`` seconds (``ramp`` for peak/soak/custom)."""
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}; known: {', '.join(SCENARIOS)}")
    if level <= 0 or duration <= 0:
        raise ValueError("the level and the duration must be positive")
    if name == "baseline":
        return constant(level, duration)
    if name == "stress":
        quarter = duration / 4
        stages: list[Stage] = []
        for factor in (0.5, 1.0, 1.5, 2.0):
            stages += [Stage(quarter * 0.1, level * factor), Stage(quarter * 0.9, level * factor)]
        return Profile(tuple(stages))
    if name == "spike":
        high = level * SPIKE_FACTOR
        edge = duration * 0.02
        return Profile(
            (
                Stage(duration * 0.4, level),
                Stage(edge, high),
                Stage(duration * 0.2 - 2 * edge, high),
                Stage(edge, level),
                Stage(duration * 0.4, level),
            ),
            start_level=level,
        )
    ramp = duration * _DEFAULT_RAMP_SHARE[name] if ramp is None else ramp
    if not 0 <= ramp <= duration:
        raise ValueError(f"the ramp ({ramp:g} s) must be between 0 and the duration ({duration:g} s)")
    if ramp == 0:
        return constant(level, duration)
    return Profile((Stage(ramp, level), Stage(duration - ramp, level)))
