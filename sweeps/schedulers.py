"""The early-stopping schedulers a sweep may run (`--scheduler`), built for a sweep, and the epochs at which each
may stop a trial or have it wait.

    for_sweep(sweep)             # the scheduler Tune runs the sweep with
    rungs(sweep)                 # the epochs at which it may stop or pause a trial (trials checkpoint there)
    rungs_before_budget(sweep)   # those before the budget, where a trial can end early
"""

from __future__ import annotations

import math

from sweeps.asha import PromotionASHA, ResumableASHA
from sweeps.hyperband import ResumableHyperBand

# --scheduler NAME (sweeps.sweep.SCHEDULERS, which the command line reads without importing Ray) -> its class.
SCHEDULERS = {"promotion": PromotionASHA, "asha": ResumableASHA, "hyperband": ResumableHyperBand}


def for_sweep(sweep) -> ResumableASHA | ResumableHyperBand:
    kind = SCHEDULERS[sweep.scheduler]
    if kind is ResumableHyperBand:  # its brackets follow from the budget and the factor: no grace period
        return kind(time_attr="epoch", max_t=sweep.budget, reduction_factor=sweep.reduction_factor)
    return kind(
        time_attr="epoch",
        max_t=sweep.budget,
        grace_period=grace_period(sweep),
        reduction_factor=sweep.reduction_factor,
    )


def pauses(sweep) -> bool:
    """Whether the sweep's scheduler pauses trials at its rungs (they then checkpoint there, to resume from)."""
    return sweep.early_stop and SCHEDULERS[sweep.scheduler].pauses


def grace_period(sweep) -> int:
    return min(sweep.grace_period or sweep.entry.presets[sweep.preset].grace_period, sweep.budget)


def rungs(sweep) -> list[int]:
    """The epochs at which the scheduler may stop or pause a trial: ASHA's rungs as Ray's ASHA sets them
    (async_hyperband.py, _Bracket), HyperBand's milestones of every bracket."""
    if SCHEDULERS[sweep.scheduler] is ResumableHyperBand:
        return ResumableHyperBand.milestones(sweep.budget, sweep.reduction_factor)
    grace, budget = grace_period(sweep), sweep.budget
    factor = sweep.reduction_factor
    count = int(math.log(budget / grace) / math.log(factor) + 1)  # Ray's own arithmetic
    return [grace * factor**k for k in range(count)]


def rungs_before_budget(sweep) -> list[int]:
    """The rungs at which a trial may stop or wait early (at its budget a trial ends anyway)."""
    return [rung for rung in rungs(sweep) if rung < sweep.budget]
