"""Checkpoint files: what is refused, and where a trial goes on when its checkpoint cannot be read."""

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from pyarrow.fs import PyFileSystem
from ray import tune

from lstm_ae.model import LSTMAutoencoder
from sweeps import checkpoints, storage
from sweeps.checkpoints import CheckpointError
from sweeps.experiments import EXPERIMENTS
from sweeps.trial import keep_if_better

TINY_MODEL = {"input_size": 1, "hidden_size": 2}


def write_checkpoints(trial: Path, epochs=(3, 6, 9)) -> list[Path]:
    """Checkpoints of a tiny model, each marked with its epoch in its reconstruction bias."""
    folders = []
    for index, epoch in enumerate(epochs):
        folder = trial / f"checkpoint_{index:06d}"
        folder.mkdir(parents=True)
        weights = LSTMAutoencoder.from_config(TINY_MODEL).state_dict()
        weights["reconstruct.bias"].fill_(epoch)
        state = {"model": weights, "optimizer": {}, "epoch": epoch, "rng": torch.Generator().get_state()}
        checkpoints.save(folder, state, TINY_MODEL, [{"epoch": e} for e in range(1, epoch + 1)], {})
        folders.append(folder)
    return folders


class RunsCode:
    def __reduce__(self):  # unpickling this would create a file: the harm a tampered checkpoint could do
        return (Path.touch, (Path(MARKER),))


MARKER = "/tmp/lstm-ae-sweeps-pickle-ran"


def test_a_checkpoint_that_carries_code_is_refused_without_running_it(tmp_path):
    Path(MARKER).unlink(missing_ok=True)
    (folder,) = write_checkpoints(tmp_path, epochs=(3,))
    torch.save({"model": RunsCode(), "epoch": 3}, folder / checkpoints.MODEL_FILE)
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {folder / 'model.pt'}: UnpicklingError"):
        checkpoints.load(folder)
    assert not Path(MARKER).exists()


@pytest.mark.parametrize("filesystem", [None, PyFileSystem(storage.WholeFiles())], ids=["pyarrow", "sweeps"])
def test_a_checkpoint_file_that_links_outside_the_sweep_is_refused_and_the_previous_one_used(
    tmp_path, capsys, filesystem
):
    """Whichever file system of this machine Ray gives the checkpoint (storage.for_ray: the sweeps' own), the trial
    reads the folder itself, not a copy that would hide the link."""
    folders = write_checkpoints(tmp_path / "trial")
    outside = tmp_path / "elsewhere.pt"
    shutil.move(folders[-1] / checkpoints.MODEL_FILE, outside)  # a whole, readable model.pt, out of the sweep
    (folders[-1] / checkpoints.MODEL_FILE).symlink_to(outside)
    with pytest.raises(CheckpointError, match=f"{folders[-1] / 'model.pt'}: it is a symbolic link \\(to {outside}"):
        checkpoints.load(folders[-1])
    state, _ = checkpoints.restore(tune.Checkpoint(str(folders[-1]), filesystem=filesystem), "previous", "t")
    assert state["epoch"] == 6 and "nothing outside the sweep is read as a checkpoint" in capsys.readouterr().err


def test_evaluate_never_reads_a_linked_model_file(tmp_path):
    from sweeps.evaluate import EvaluationError, load

    folder = write_checkpoints(tmp_path / "trial", epochs=(3,))[0]
    outside = tmp_path / "elsewhere.pt"
    shutil.move(folder / checkpoints.MODEL_FILE, outside)
    (folder / checkpoints.MODEL_FILE).symlink_to(outside)
    for given in (folder, folder / checkpoints.MODEL_FILE):
        with pytest.raises(EvaluationError, match="is a symbolic link"):
            load(given)


@pytest.mark.parametrize(
    "tamper, message",
    [
        (lambda state: state["model_config"].update(hidden_size=3), "its weights do not fit its model configuration: "),
        (
            lambda state: state["best"]["model"].pop("reconstruct.bias"),
            "its weights do not fit its model configuration: reconstruct.bias is absent where its configuration makes 1",
        ),
        (lambda state: state["model_config"].update(cell="gru"), "its model configuration does not build a model"),
        (lambda state: state["model_config"].update(hidden_size=-1), "its model configuration does not build a model"),
    ],
    ids=["shapes", "best-epoch's", "unknown-field", "impossible-value"],
)
def test_a_checkpoint_whose_weights_do_not_fit_its_configuration_is_named_and_the_previous_one_used(
    tmp_path, capsys, tamper, message
):
    folders = write_checkpoints(tmp_path / "trial")
    model_file = folders[-1] / checkpoints.MODEL_FILE
    state = torch.load(model_file, weights_only=True)
    state["best"] = {"model": dict(state["model"]), "epoch": 9, "value": 0.1}
    tamper(state)
    torch.save(state, model_file)
    with pytest.raises(CheckpointError, match=f"cannot read checkpoint {model_file}: {message}"):
        checkpoints.load(folders[-1])
    state, _ = checkpoints.restore(tune.Checkpoint(str(folders[-1])), "previous", "t")
    assert state["epoch"] == 6 and message in capsys.readouterr().err


def test_a_readable_checkpoint_is_used_as_it_is(tmp_path):
    folders = write_checkpoints(tmp_path)
    state, history = checkpoints.restore(tune.Checkpoint(str(folders[-1])), "previous", "t")
    assert state["epoch"] == 9 and len(history) == 9 and state["model"]["reconstruct.bias"][0] == 9
    assert checkpoints.restore(None, "previous", "t") == (None, [])


def test_checkpoints_saved_after_rays_record_are_gone_on_from(tmp_path, capsys):
    # A driver killed after a trial's checkpoint but before Ray's next snapshot of the sweep: its record names an
    # older checkpoint. Going on from that one would train the epochs between twice (all the last ones, for a
    # trial that had finished); the trial's newest readable checkpoint is where it goes on.
    folders = write_checkpoints(tmp_path)
    state, history = checkpoints.restore(tune.Checkpoint(str(folders[0])), "scratch", "t")
    assert state["epoch"] == 9 and len(history) == 9
    assert f"going on from its newest checkpoint {folders[2]} (epoch 9), which Ray's record" in capsys.readouterr().err
    assert checkpoints.read_newest_history(tune.Checkpoint(str(folders[0]))).epoch.max() == 9
    # A newer one that cannot be read (a driver killed while Ray copied it) is named and passed over.
    (folders[2] / checkpoints.MODEL_FILE).write_bytes(b"half a file")
    state, _ = checkpoints.restore(tune.Checkpoint(str(folders[0])), "scratch", "t")
    assert (
        state["epoch"] == 6
        and f"cannot read checkpoint {folders[2] / checkpoints.MODEL_FILE}" in capsys.readouterr().err
    )
    (folders[1] / checkpoints.METRICS_FILE).write_bytes(b"half a file")
    shutil.rmtree(folders[2])
    assert checkpoints.read_newest_history(tune.Checkpoint(str(folders[0]))).epoch.max() == 3


@pytest.mark.parametrize("fallback, epoch", [("previous", 3), ("scratch", None)])
def test_an_unreadable_checkpoint_falls_back_as_chosen(tmp_path, capsys, fallback, epoch):
    folders = write_checkpoints(tmp_path)
    model = folders[2] / checkpoints.MODEL_FILE
    model.write_bytes(model.read_bytes()[:100])  # truncated
    (folders[1] / checkpoints.METRICS_FILE).write_bytes(b"not parquet")  # and its predecessor is damaged too
    state, history = checkpoints.restore(tune.Checkpoint(str(folders[2])), fallback, "trial_x")
    assert (state and state["epoch"]) == epoch and len(history) == (epoch or 0)
    said = capsys.readouterr().err
    assert f"trial trial_x: cannot read checkpoint {model}" in said
    if fallback == "previous":
        assert f"going on from the previous checkpoint {folders[0]} (epoch 3)" in said
    else:
        assert "starting again from scratch" in said


def test_no_readable_checkpoint_left_starts_from_scratch(tmp_path, capsys):
    folders = write_checkpoints(tmp_path, epochs=(3, 6))
    for folder in folders:
        (folder / checkpoints.MODEL_FILE).unlink()
    assert checkpoints.restore(tune.Checkpoint(str(folders[-1])), "previous", "t") == (None, [])
    assert "no readable checkpoint left" in capsys.readouterr().err
    assert pd.read_parquet(folders[0] / checkpoints.METRICS_FILE).epoch.tolist() == [1, 2, 3]  # nothing deleted


def test_a_missing_checkpoint_is_named_and_falls_back(tmp_path, capsys):
    folders = write_checkpoints(tmp_path, epochs=(3, 6))
    shutil.rmtree(folders[1])
    state, _ = checkpoints.restore(tune.Checkpoint(str(folders[1])), "previous", "t")
    assert state["epoch"] == 3
    assert f"cannot read checkpoint {folders[1] / checkpoints.MODEL_FILE}: FileNotFoundError" in capsys.readouterr().err


def test_epochs_missing_from_rays_log_come_from_the_trials_checkpoint(tmp_path, capsys):
    # A resume from a checkpoint newer than the killed driver's log, here the final one: epoch 7 and the last two
    # never reached the log, but the checkpoint holds every epoch before it.
    from types import SimpleNamespace

    from sweeps.collect import _epochs

    history = pd.DataFrame({"epoch": range(1, 11), "train_loss": [0.1] * 9 + [float("nan")], "val_mse": range(11, 21)})
    history.to_parquet(tmp_path / checkpoints.METRICS_FILE)
    trial = SimpleNamespace(
        trial_id="t", status="TERMINATED", config={"epochs": 10}, checkpoint=tune.Checkpoint(str(tmp_path))
    )
    logged = history[history.epoch.isin([1, 2, 3, 4, 5, 6, 8])].assign(diverged=False, node_id="n")
    filled = _epochs(logged, trial)
    assert filled.epoch.tolist() == list(range(1, 11)) and filled.val_mse.tolist() == list(range(11, 21))
    assert filled.diverged.tolist() == [False] * 9 + [True]  # as the trial itself would have reported them
    assert filled.diverged.dtype == bool

    (tmp_path / checkpoints.METRICS_FILE).write_bytes(b"not parquet")
    assert _epochs(logged, trial).epoch.tolist() == [1, 2, 3, 4, 5, 6, 8]
    assert "collect: trial t: epochs missing from its log, and cannot read checkpoint" in capsys.readouterr().err


def test_the_best_epochs_weights_are_kept_until_an_epoch_beats_them():
    experiment = EXPERIMENTS["synthetic"]  # val_mse, lower is better
    model = torch.nn.Linear(1, 1)
    kept = None
    for epoch, value in enumerate([0.5, 0.3, 0.3, float("nan"), 0.4, 0.2], start=1):
        with torch.no_grad():
            model.weight.fill_(epoch)
        kept = keep_if_better(kept, {"epoch": epoch, "val_mse": value}, model, experiment)
        if epoch == 4:  # a tie keeps the earlier epoch; a NaN never wins
            assert kept["epoch"] == 2 and kept["value"] == 0.3 and kept["model"]["weight"].item() == 2
    assert kept["epoch"] == 6 and kept["model"]["weight"].item() == 6
    with torch.no_grad():
        model.weight.fill_(7)
    assert kept["model"]["weight"].item() == 6  # a copy, not the live weights


def test_a_checkpoint_from_before_best_weights_were_kept_starts_them_at_its_own_epoch():
    state = {"model": {"w": torch.ones(1)}, "epoch": 2}
    history = [{"epoch": 1, "val_mse": 0.1}, {"epoch": 2, "val_mse": 0.3}]
    assert checkpoints.best_weights(state, history, "val_mse") == {"model": state["model"], "epoch": 2, "value": 0.3}
    kept = {"model": {"w": torch.zeros(1)}, "epoch": 1, "value": 0.1}
    assert checkpoints.best_weights({**state, checkpoints.BEST: kept}, history, "val_mse") is kept
    assert checkpoints.best_weights(None, [], "val_mse") is None
