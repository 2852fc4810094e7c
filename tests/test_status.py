"""`sweeps status`'s time left: a range, from ASHA stopping every trial it may at its next rung to none at all."""

from __future__ import annotations

import pandas as pd
import pytest

from sweeps import schedulers, status
from sweeps.experiments import EXPERIMENTS
from sweeps.sweep import Sweep, command_line


def state_of(sweep: Sweep, running_epochs: list[int], pending: int, created: int) -> status.Status:
    counts = {"finished": created - len(running_epochs) - pending, "stopped early": 0, "diverged": 0, "errored": 0}
    counts |= {"running": len(running_epochs), "waiting": 0, "pending": pending}
    running = [
        {"trial_id": f"t{i}", "config": {}, "epoch": e, "budget": sweep.budget, "value": None, "waiting": False}
        for i, e in enumerate(running_epochs)
    ]
    return status.Status("s", sweep.experiment, sweep.preset, "grid", "val_mse", 24, counts, running)


def metrics_at(seconds_per_epoch: float, epochs: dict) -> pd.DataFrame:
    rows = [(t, e, e * seconds_per_epoch) for t, last in epochs.items() for e in range(1, last + 1)]
    return pd.DataFrame(rows, columns=["trial_id", "epoch", "time_total_s"])


@pytest.mark.parametrize("scheduler", ["promotion", "asha"])
@pytest.mark.parametrize("epochs", [None, 2, 30, 200])
@pytest.mark.parametrize("preset", ["quick", "paper"])
@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_status_reckons_with_the_rungs_rays_asha_sets(experiment, preset, epochs, scheduler):
    sweep = Sweep(experiment, preset=preset, epochs=epochs, scheduler=scheduler)
    (bracket,) = schedulers.for_sweep(sweep)._brackets
    assert schedulers.rungs(sweep) == sorted(milestone for milestone, _ in bracket._rungs)


def test_the_synthetic_grids_rungs():
    assert schedulers.rungs(Sweep("synthetic", preset="paper")) == [50, 150, 450]  # grace 50; promotion: a third on
    assert schedulers.rungs(Sweep("synthetic", preset="paper", scheduler="asha")) == [50, 200, 800]  # Ray's: a quarter
    quarter = Sweep("synthetic", preset="paper", reduction_factor=4)
    assert schedulers.rungs(quarter) == [50, 200, 800] and "--reduction-factor 4" in command_line(quarter)
    assert "--reduction-factor" not in command_line(Sweep("synthetic", scheduler="asha"))


def test_grace_period_moves_the_rungs_and_is_in_the_command():
    sweep = Sweep("synthetic", preset="paper", grace_period=100)
    assert schedulers.rungs(sweep) == [100, 300, 900]
    assert sorted(milestone for milestone, _ in schedulers.for_sweep(sweep)._brackets[0]._rungs) == [100, 300, 900]
    assert "--grace-period 100" in command_line(sweep) and "--grace-period" not in command_line(Sweep("synthetic"))


def test_time_left_runs_from_every_trial_stopped_at_its_next_rung_to_every_trial_at_its_budget():
    sweep = Sweep("synthetic", preset="paper", scheduler="asha")  # rungs at 50, 200 and 800
    state = state_of(sweep, running_epochs=[120, 850], pending=3, created=10)  # 14 not created yet, 3 pending
    least, most = status._time_left(metrics_at(2.0, {"t0": 120, "t1": 850}), state, sweep)
    per_epoch = 2.0 / 2  # two trials at once
    assert most == per_epoch * ((1000 - 120) + (1000 - 850) + 17 * 1000)
    assert least == per_epoch * ((200 - 120) + (1000 - 850) + 17 * 50)  # past the last rung (800): to the budget
    assert "left (as ASHA stops trials or lets them run)" in status.text(state_with(state, least, most))


def test_without_asha_the_time_left_is_one_figure():
    sweep = Sweep("synthetic", preset="paper", early_stop=False)
    state = state_of(sweep, running_epochs=[100], pending=0, created=24)
    least, most = status._time_left(metrics_at(1.0, {"t0": 100}), state, sweep)
    assert least == most == 900
    assert "about 15 min left" in status.text(state_with(state, least, most))


def test_the_time_since_the_sweep_started_is_said_as_such():
    """Wall time since `sweeps run`, pauses between resumes included: not "elapsed", which read as time running."""
    sweep = Sweep("synthetic", preset="paper", early_stop=False)
    state = state_of(sweep, running_epochs=[100], pending=0, created=24)
    state.elapsed_s = 5820
    assert "started 1 h 37 min ago" in status.text(state) and "elapsed" not in status.text(state)


def test_the_rungs_and_the_trials_waiting_at_them_are_shown():
    sweep = Sweep("synthetic")  # the demo: rungs at 1, 4 and 16, 24 epochs
    state = state_of(sweep, running_epochs=[1, 1, 16, 5], pending=0, created=24)
    for entry in state.running[:3]:
        entry["waiting"] = True
    state.scheduler, state.rungs = "promotion", [1, 4, 16]
    shown = status.text(state)
    assert "early stopping: promotion, rungs at epochs 1, 4, 16; waiting there: 2 at 1, 1 at 16" in shown
    assert "  waiting t2: epoch 16/24" in shown and "  running t3: epoch 5/24" in shown
    state.running[0]["waiting"] = state.running[1]["waiting"] = state.running[2]["waiting"] = False
    assert "rungs at epochs 1, 4, 16\n" in status.text(state)  # nobody waits: no list


def state_with(state: status.Status, least: float, most: float) -> status.Status:
    state.left_min_s, state.left_s = least, most
    return state
