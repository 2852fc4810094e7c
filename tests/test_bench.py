"""The benchmark: its pure pieces, and one real `sweeps bench --quick` from the command line."""

import json
import math

import pandas as pd
import pytest
import torch

from lstm_ae import precision
from lstm_ae.train import fit
from sweeps import bench
from sweeps.__main__ import main
from sweeps.bench import pixel as pixel_measure
from sweeps.bench.harness import NOT_RUN, Bench, Row, format_table, row, write
from sweeps.bench.yardstick import SHAPES, bare_epoch, make_model, random_splits
from tests.precisions import NATIVE_BF16
from tests.sweeping import sweeps_cli

pytestmark = pytest.mark.ray  # starts Ray: not in `make test-fast`
NAMES = [m.name for m in bench.MEASURES]


def test_rows_are_written_as_a_table_a_parquet_file_and_machine_json(tmp_path):
    rows = [
        row("trainer overhead", "synthetic", 1.02, ("<=", 1.05), "fit 10 ms vs bare loop 9.8 ms"),
        row("parallel efficiency", "24-trial grid on 2 cores", 0.85, (">=", 0.90), "below target"),
        row("threads", "2 threads vs 1", 1.4),
        Row("memory", "failed", float("nan"), detail="RuntimeError: boom"),
    ]
    assert [r.holds for r in rows] == [True, False, None, None]
    write(rows, {"cpu": "test CPU", "cores": 2}, tmp_path)

    table = pd.read_parquet(tmp_path / "bench.parquet")
    assert list(table.columns) == ["measure", "quantity", "value", "target", "holds", "detail"]
    assert table.measure.tolist() == ["trainer overhead", "parallel efficiency", "threads", "memory"]
    assert table.value.iloc[:3].tolist() == [1.02, 0.85, 1.4] and math.isnan(table.value.iloc[3])
    assert table.target.tolist() == ["<= 1.05", ">= 0.9", "", ""]
    assert table.holds.iloc[0] is True or table.holds.iloc[0] == True  # noqa: E712 (pandas' nullable boolean)
    assert table.holds.iloc[1] == False and table.holds.isna().tolist() == [False, False, True, True]  # noqa: E712
    assert json.loads((tmp_path / "machine.json").read_text()) == {"cpu": "test CPU", "cores": 2}

    lines = format_table(rows).splitlines()
    assert lines[0].split()[:5] == ["measure", "quantity", "value", "target", "holds"]
    assert "1.020" in lines[1] and "<= 1.05" in lines[1] and " yes " in lines[1]
    assert "0.850" in lines[2] and " NO " in lines[2] and lines[2].endswith("below target")
    assert "nan" in lines[4] and lines[4].endswith("RuntimeError: boom")


def test_the_registry_names_each_measure_once_and_every_target_is_a_bound():
    assert len(set(NAMES)) == len(NAMES)
    assert NAMES.index("pixel") < NAMES.index("GPU packing")
    for measure in bench.MEASURES:
        assert set(measure.devices) <= {"cpu", "cuda"}
        assert all(op in ("<=", ">=") and math.isfinite(bound) for op, bound in measure.targets.values())


@pytest.mark.parametrize("name", SHAPES)
def test_bare_loop_computes_the_losses_of_fits_first_epoch(name):
    """Same seed, same data, same batches: the yardstick does the same work as fit (so timing it is fair)."""
    shape = SHAPES[name]
    splits = random_splits(shape, 70, 30)  # batches of 32: the last one is short
    with_fit, bare = make_model(shape), make_model(shape)
    expected = next(
        fit(with_fit, splits, epochs=1, batch_size=shape.batch_size, lr=1e-2, grad_clip=0.5, seed=3, device="cpu")
    )
    optimizer = torch.optim.Adam(bare.parameters(), lr=1e-2, fused=True)
    got = bare_epoch(
        bare, optimizer, splits.train, splits.val, shape.batch_size, 0.5, 0.5, torch.Generator().manual_seed(3)
    )
    assert got["train_loss"] == pytest.approx(expected["train_loss"], rel=1e-5)
    assert got["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-5)
    for a, b in zip(with_fit.parameters(), bare.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.timeout(900)  # 3 to 6 minutes on a 2-core machine; much more while other jobs share it
def test_quick_bench_from_the_command_line(tmp_path):
    done = sweeps_cli(
        "bench", "--quick", "--out", "bench", cwd=tmp_path, timeout=880
    )  # a relative --out, as users write it
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "bench" / "bench.parquet")
    assert table.measure.unique().tolist() == [m.name for m in bench.MEASURES if "cpu" in m.devices]  # registry order
    measured = table[table.quantity != NOT_RUN]
    assert measured.value.map(math.isfinite).all(), table[["measure", "quantity", "detail"]].to_string()
    assert set(table.quantity[table.measure == "trainer overhead"]) == set(SHAPES)
    assert (table.holds.notna() == (table.target != "")).all()  # a verdict exactly where there is a target
    efficiency = table[table.measure == "parallel efficiency"]
    whole, once_up = (
        efficiency.value.iloc[0],
        efficiency.value[efficiency.quantity.str.contains("once its workers were up")],
    )
    assert len(once_up) == 1 and once_up.iloc[0] > whole, (
        efficiency.to_string()
    )  # the workers' start is found and taken out

    loggers = table[table.measure == "loggers"]  # the quick bench times TensorBoard's alone
    assert loggers.quantity.tolist() == ["tensorboard vs no logger (sweep time, 4 epochs)"]
    assert loggers.detail.str.contains("ms per reported epoch").all()

    parity = table[table.measure == "precision parity"]
    pixel = table[table.measure == "pixel"].set_index("quantity")
    if NATIVE_BF16:
        assert [q.split(":")[0] for q in parity.quantity] == ["rows", "pixels"] and (parity.target == "<= 1").all()
        assert parity.detail.str.contains("val accuracy fp32/bf16 per seed").all()
        bf16 = pixel.loc["bf16 vs fp32 step time, recipe model"]
        assert 0 < bf16.value < 10 and "ms per step" in bf16.detail, pixel.to_string()
    else:  # measured in fp32 only, and the parity row says why it was not run
        assert parity.quantity.tolist() == [NOT_RUN] and "needs a CPU with native bf16" in parity.detail.iloc[0]
        assert not pixel.index.str.contains("bf16").any()
    before = pixel.loc["training step speed-up over before the fused layer, recipe model"]
    assert before.target == ">= 2.5" and before.value > 1 and "hidden 64, batch 64" in before.detail, pixel.to_string()
    study = pixel.loc["training step speed-up over before the fused layer, the study's shape"]
    assert study.value > 1 and "hidden 100, batch 128" in study.detail
    assert pixel.loc["fused layer vs step by step, both keeping freed memory, recipe model"].value > 1
    assert "recipe model vs nn.LSTM encoder, step time" in pixel.index
    assert "2 threads vs 1 step speed-up, recipe model" in pixel.index
    epoch = pixel.loc["projected epoch of one trial on 50,000 images (s), hidden 64, batch 64"]
    assert epoch.target == "<= 200" and epoch.value > 0 and "782 steps of batch 64" in epoch.detail
    study_epoch = pixel.loc["projected epoch of one trial on 50,000 images (s), hidden 100, batch 128"]
    assert study_epoch.target == "" and "391 steps of batch 128" in study_epoch.detail

    machine = json.loads((tmp_path / "bench" / "machine.json").read_text())
    assert machine["cores"] >= 1 and machine["torch"] == torch.__version__ and machine["mode"] == "quick"
    assert machine["device"] == "cpu" and machine["ray_start_s"] > 0
    assert "bench took" in done.stdout and "trainer overhead" in done.stdout and "projected epoch" in done.stdout


def test_on_a_cpu_without_bf16_the_parity_measure_says_it_was_not_run(tmp_path, monkeypatch):
    """Simulated on any CPU; the quick bench above takes this path on a CPU that lacks bf16."""
    monkeypatch.setattr(precision, "cpu_runs_bf16", lambda: False)
    measure = next(m for m in bench.MEASURES if m.name == "precision parity")
    rows = measure.rows(Bench(bench.QUICK, tmp_path, 2, measure=measure.name, targets=measure.targets))
    assert [(r.quantity, r.holds) for r in rows] == [(NOT_RUN, None)] and "native bf16" in rows[0].detail
    assert pixel_measure.precisions("cpu") == ["fp32"]


def test_an_unwritable_out_is_refused_before_measuring(capsys):
    assert main(["bench", "--quick", "--out", "/proc/bench"]) == 2  # not even root can create folders there
    err = capsys.readouterr().err.strip()
    assert err.startswith("sweeps: error: cannot write to --out /proc/bench") and "\n" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the bench would run on it")
def test_cuda_without_a_gpu_is_one_line_and_status_2_before_anything_is_written(tmp_path, capsys):
    assert bench.main(quick=True, out=str(tmp_path / "bench"), device="cuda") == 2
    captured = capsys.readouterr()
    assert captured.err == "sweeps: error: --device cuda: no CUDA GPU here\n" and captured.out == ""
    assert not (tmp_path / "bench").exists()


def test_measures_are_chosen_by_name_and_unknown_ones_refused(tmp_path):
    refused = sweeps_cli("bench", "--quick", "--measure", "nope", "--out", tmp_path / "x")
    assert (
        refused.returncode == 2 and "--measure nope: no such measure; choose among trainer-overhead," in refused.stderr
    )
    elsewhere = sweeps_cli("bench", "--quick", "--measure", "gpu-packing", "--out", tmp_path / "x")
    assert elsewhere.returncode == 2 and "--measure gpu-packing does not run on --device cpu" in elsewhere.stderr
    chosen = sweeps_cli("bench", "--quick", "--measure", "Threads", "--out", tmp_path / "b")
    assert chosen.returncode == 0, chosen.stderr[-3000:]
    table = pd.read_parquet(tmp_path / "b" / "bench.parquet")
    assert set(table.measure) == {"threads"} and not (tmp_path / "x").exists()
    # The command line's help names every measure of the registry (it lists them without importing torch).
    help_text = " ".join(sweeps_cli("bench", "--help").stdout.split()).replace("- ", "-")  # (argparse breaks at "-")
    assert all(bench.slug(m.name) in help_text for m in bench.MEASURES)
