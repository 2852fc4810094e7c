"""Early stopping: the synthetic quick grid at a medium budget, each scheduler in each order of the grid's trials, over
the same grid trained to its budget: epochs trained, best val_mse, wall time.

Ray's ASHA lets the first trial to reach a rung pass it (ray-project/ray#4401): in the grid's own order, whose
first trials all come from one corner, that costs most; shuffled, least. The default scheduler must hold its targets
in both orders.
"""

from __future__ import annotations

from sweeps.bench.harness import Bench, Row, synthetic_sweep, timed_sweep


def measure(bench: Bench) -> list[Row]:
    from sweeps import collect
    from sweeps.sweep import DEFAULT_SCHEDULER, REDUCTION_FACTORS, WITHOUT_GRACE

    epochs_each, grace = bench.budget.early_stop_epochs, bench.budget.early_stop_grace
    full_grid = timed_sweep(synthetic_sweep("quick", epochs=epochs_each, early_stop=False), bench.out, "early-stop-off")
    all_epochs = full_grid.trials.epochs.sum()
    full_best = _best(collect, full_grid)
    rows = []
    for scheduler, order in bench.budget.early_stop_runs:
        first_rung = None if scheduler in WITHOUT_GRACE else grace
        sweep = synthetic_sweep(
            "quick",
            epochs=epochs_each,
            grace_period=first_rung,
            scheduler=scheduler,
            reduction_factor=REDUCTION_FACTORS[scheduler],  # its own default share (the quick preset's is the demo's)
            order=order,
        )
        result = timed_sweep(sweep, bench.out, f"early-stop-{scheduler}-{order}")
        epochs, best = result.trials.epochs.sum(), _best(collect, result)
        # The default holds the targets; the others are what it is measured against.
        judged = scheduler == DEFAULT_SCHEDULER
        what = f"{scheduler}, {order} order"
        rows += [
            bench.row(
                f"epochs trained, {what}, vs all",
                epochs / all_epochs,
                "epochs" if judged else None,
                f"{epochs} of {all_epochs} epochs ({len(result.trials)} trials, {epochs_each} epochs each, "
                f"{'its brackets' if first_rung is None else f'grace {grace}'}); "
                f"{int(result.trials.stopped_early.sum())} stopped early",
            ),
            bench.row(
                f"best val_mse, {what}, vs all",
                best / full_best,
                "best" if judged else None,
                f"{best:.5f} vs {full_best:.5f} with every trial to its budget",
            ),
            bench.row(
                f"wall time, {what}, vs all",
                result.wall_s / full_grid.wall_s,
                detail=f"sweep {result.wall_s:.1f} s vs {full_grid.wall_s:.1f} s",
            ),
        ]
    return rows


def _best(collect, result) -> float:
    return collect.ranked(result.trials, "val_mse", "min").best_val_mse.iloc[0]
