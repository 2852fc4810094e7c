"""The benchmark: its pure pieces, and one real `sweeps bench --quick` from the command line."""

import json
import math

import pandas as pd
import pytest
import torch

from lstm_ae.train import fit
from sweeps import bench
from sweeps.__main__ import main
from sweeps.bench import (
    FIGURES,
    SHAPES,
    Row,
    bare_epoch,
    format_table,
    random_splits,
    row,
    write,
)
from tests.sweeping import sweeps_cli

pytestmark = pytest.mark.ray  # starts Ray: not in `make test-fast`


def test_rows_are_written_as_a_table_a_parquet_file_and_machine_json(tmp_path):
    rows = [
        row(FIGURES[0], "synthetic", 1.02, ("<=", 1.05), "fit 10 ms vs bare loop 9.8 ms"),
        row(FIGURES[2], "24-trial grid on 2 cores", 0.85, (">=", 0.90), "below target"),
        row(FIGURES[3], "2 threads vs 1", 1.4),
        Row(FIGURES[5], "failed", float("nan"), detail="RuntimeError: boom"),
    ]
    assert [r.holds for r in rows] == [True, False, None, None]
    write(rows, {"cpu": "test CPU", "cores": 2}, tmp_path)

    table = pd.read_parquet(tmp_path / "bench.parquet")
    assert list(table.columns) == ["figure", "measure", "value", "target", "holds", "detail"]
    assert table.figure.tolist() == [FIGURES[0], FIGURES[2], FIGURES[3], FIGURES[5]]
    assert table.value.iloc[:3].tolist() == [1.02, 0.85, 1.4] and math.isnan(table.value.iloc[3])
    assert table.target.tolist() == ["<= 1.05", ">= 0.9", "", ""]
    assert table.holds.iloc[0] is True or table.holds.iloc[0] == True  # noqa: E712 (pandas' nullable boolean)
    assert table.holds.iloc[1] == False and table.holds.isna().tolist() == [False, False, True, True]  # noqa: E712
    assert json.loads((tmp_path / "machine.json").read_text()) == {"cpu": "test CPU", "cores": 2}

    lines = format_table(rows).splitlines()
    assert lines[0].split()[:5] == ["figure", "measure", "value", "target", "holds"]
    assert "1.020" in lines[1] and "<= 1.05" in lines[1] and " yes " in lines[1]
    assert "0.850" in lines[2] and " NO " in lines[2] and lines[2].endswith("below target")
    assert "nan" in lines[4] and lines[4].endswith("RuntimeError: boom")


@pytest.mark.parametrize("name", SHAPES)
def test_bare_loop_computes_the_losses_of_fits_first_epoch(name):
    """Same seed, same data, same batches: the yardstick does the same work as fit (so timing it is fair)."""
    shape = SHAPES[name]
    splits = random_splits(shape, 70, 30)  # batches of 32: the last one is short
    with_fit, bare = bench._model(shape), bench._model(shape)
    expected = next(fit(with_fit, splits, epochs=1, batch_size=shape.batch_size, lr=1e-2, grad_clip=0.5, seed=3, device="cpu"))
    optimizer = torch.optim.Adam(bare.parameters(), lr=1e-2)
    got = bare_epoch(bare, optimizer, splits.train, splits.val, shape.batch_size, 0.5, 0.5, torch.Generator().manual_seed(3))
    assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
    assert got["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-5)
    for a, b in zip(with_fit.parameters(), bare.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.timeout(900)  # under 2 minutes on an idle 2-core machine; much more while other jobs share it
def test_quick_bench_from_the_command_line(tmp_path):
    done = sweeps_cli("bench", "--quick", "--out", "bench", cwd=tmp_path, timeout=880)  # a relative --out, as users write it
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "bench" / "bench.parquet")
    assert set(table.figure) == set(FIGURES)
    assert table.value.map(math.isfinite).all(), table[["figure", "measure", "detail"]].to_string()
    assert set(table.measure[table.figure == FIGURES[0]]) == set(SHAPES)
    assert (table.holds.notna() == (table.target != "")).all()  # a verdict exactly where there is a target
    efficiency = table[table.figure == FIGURES[2]]
    whole, once_up = efficiency.value.iloc[0], efficiency.value[efficiency.measure.str.contains("once its workers were up")]
    assert len(once_up) == 1 and once_up.iloc[0] > whole, efficiency.to_string()  # the workers' start is found and taken out
    machine = json.loads((tmp_path / "bench" / "machine.json").read_text())
    assert machine["cores"] >= 1 and machine["torch"] == torch.__version__ and machine["mode"] == "quick"
    assert "bench took" in done.stdout and "trainer overhead" in done.stdout


def test_an_unwritable_out_is_refused_before_measuring(capsys):
    assert main(["bench", "--quick", "--out", "/proc/bench"]) == 2  # not even root can create folders there
    err = capsys.readouterr().err.strip()
    assert err.startswith("sweeps: error: cannot write to --out /proc/bench") and "\n" not in err
