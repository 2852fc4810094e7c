"""ASHA: the synthetic quick grid at a medium budget with ASHA over without: epochs trained, best val_mse, wall time."""

from __future__ import annotations

from sweeps.bench.harness import Bench, Row, run_sweep, synthetic_sweep


def run(bench: Bench) -> list[Row]:
    from sweeps import collect
    from sweeps.sweep import Sweep

    epochs_each = bench.budget.asha_epochs
    runs = {
        early_stop: run_sweep(
            synthetic_sweep("quick", epochs=epochs_each, early_stop=early_stop),
            bench.out,
            f"asha-{'on' if early_stop else 'off'}",
        )
        for early_stop in (False, True)
    }
    result, full_grid = runs[True], runs[False]
    epochs, all_epochs = result.trials.epochs.sum(), full_grid.trials.epochs.sum()
    best, full_best = (collect.ranked(r.trials, "val_mse", "min").best_val_mse.iloc[0] for r in (result, full_grid))
    grace = Sweep("synthetic").entry.presets["quick"].grace_period
    return [
        bench.row(
            "epochs trained, ASHA vs all",
            epochs / all_epochs,
            "epochs",
            f"{epochs} of {all_epochs} epochs ({len(result.trials)} trials, {epochs_each} epochs each, grace {grace}, "
            f"scheduler {Sweep('synthetic').scheduler}); "
            f"{int(result.trials.stopped_early.sum())} stopped early",
        ),
        bench.row(
            "best val_mse, ASHA vs all", best / full_best, "best", f"{best:.5f} with ASHA vs {full_best:.5f} without"
        ),
        bench.row(
            "wall time, ASHA vs all",
            result.wall_s / full_grid.wall_s,
            detail=f"sweep {result.wall_s:.1f} s vs {full_grid.wall_s:.1f} s",
        ),
    ]
