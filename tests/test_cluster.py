"""Sweeps on more than one Ray node, and the cluster configuration: real raylets on loopback."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from unittest import mock

import pandas as pd
import psutil
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from ray.cluster_utils import Cluster

from tests.precisions import WITHOUT_BF16
from tests.sweeping import (
    TWO_SMALL_TRIALS,
    check_tables,
    checkpoint_dirs,
    free_port,
    results_reported,
    start_driver,
    sweeps_cli,
    trial_dirs,
    wait_for,
)

pytestmark = pytest.mark.ray  # starts Ray: not in `make test-fast`

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
SMALL_GRID = ["--set", "n=1000", "--set", "hidden_size=10", "--set", "batch_size=64", "--epochs", "3", "--no-report"]


def test_cluster_yaml_passes_rays_validation():
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    validate_config(prepare_config(config))
    assert config["available_node_types"]["gpu_worker"]["min_workers"] == 0
    text = (ROOT / "cluster.yaml").read_text().lower()
    commands = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    starts = [c for c in commands if "ray start" in c]
    assert len(starts) == 2 and all("RAY_AUTH_MODE=token ray start" in c for c in starts)  # the head's and the workers'
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][-1]
    assert "0.0.0.0" not in yaml.safe_dump(config)  # no port opened to every address
    # The GPU workers write checkpoints to S3 themselves: they need an instance profile as the head has.
    assert config["available_node_types"]["gpu_worker"]["node_config"]["IamInstanceProfile"] == {
        "Name": "ray-autoscaler-v1"
    }
    assert not any(word in text for word in ("aws_access_key", "aws_secret", "password"))


def test_sweep_on_a_two_node_cluster_uses_both_nodes(tmp_path):
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        args = [
            "run",
            "synthetic",
            "--address",
            cluster.address,
            "--storage",
            tmp_path,
            "--name",
            "two-nodes",
            *SMALL_GRID,
            # Four trials of a few seconds each: stopped early at 1 epoch (a tenth of a second), the head's worker,
            # reused, ran all four before the second node's worker had started (seen in the suite and alone).
            "--no-early-stop",
            "--epochs",
            "40",
        ]
        done = sweeps_cli(*args)
        assert done.returncode == 0, done.stderr[-3000:]
    finally:
        cluster.shutdown()
    trials = pd.read_parquet(tmp_path / "two-nodes" / "trials.parquet")
    assert len(trials) == 4 and (trials.status == "TERMINATED").all()
    assert trials.node_id.nunique() == 2  # trials ran on the head and on the second node


def test_trials_on_a_node_without_bf16_fail_in_one_line_and_the_sweep_reports_it(tmp_path, monkeypatch):
    """A bf16 sweep joins a cluster whose node lacks bf16 (WITHOUT_BF16 in the node's environment; the driver's
    machine is not asked, as a CPU-only head driving GPU workers must not be): every trial fails naming the node, the
    tables and the report are written, and the command ends in one line with status 1; `sweeps report` says the same."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", WITHOUT_BF16["ONEDNN_MAX_CPU_ISA"])  # inherited by the node's processes
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
    try:
        args = ["--address", cluster.address, "--storage", tmp_path, "--name", "no-bf16"]
        done = sweeps_cli("run", "synthetic", *args, *TWO_SMALL_TRIALS, "--set", "precision=bf16")
    finally:
        cluster.shutdown()
    reason = "lstm_ae.precision.PrecisionUnavailable: on node "
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    assert last.startswith("sweeps: error: every trial failed (2 of 2): " + reason) and "native bf16" in last
    assert last.endswith(f"see {tmp_path / 'no-bf16' / 'report.md'}") and "(2 trials)" not in last  # one reason, once
    assert "could not create a primitive descriptor" not in done.stderr + done.stdout  # never oneDNN's words
    trials = pd.read_parquet(tmp_path / "no-bf16" / "trials.parquet")
    assert len(trials) == 2 and (trials.status == "ERROR").all() and trials.error.str.startswith(reason).all()
    assert pd.read_parquet(tmp_path / "no-bf16" / "metrics.parquet").empty  # not one epoch ran
    report = (tmp_path / "no-bf16" / "report.md").read_text()
    assert "Every trial failed (2 of 2): " + reason in report and "(2 trials: `" in report
    again = sweeps_cli("report", tmp_path / "no-bf16")
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "Traceback" not in again.stderr
    assert again.stderr.startswith("sweeps: error: every trial failed (2 of 2): " + reason)


@pytest.fixture
def head_node():
    """`ray start --head` on loopback with token authentication, as cluster.yaml starts a cluster's head,
    with the project's `sweeps` on its PATH."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "RAY_AUTH_MODE": "token"}
    dashboard = free_port()
    with _head(env, ["--num-cpus=2", "--include-dashboard=true", f"--dashboard-port={dashboard}"]):
        yield env, f"http://127.0.0.1:{dashboard}"


@contextlib.contextmanager
def _head(env: dict, options: list, port: int | None = None):
    """A head node of its own: its own ports and a short temporary folder. Stopped by ending the processes of its
    own session folder: `ray stop` would stop every Ray on the machine, a user's running sweeps included."""
    ray = shutil.which("ray", path=str(VENV_BIN))
    # Short: Ray's socket paths must fit in 107 bytes. Its Ray folder is <temp_dir>/ray, as where RAY_TMPDIR=temp_dir
    # points a driver: there `ray start` records its cluster as the one ray.init() without an address joins.
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    start = [
        ray,
        "start",
        "--head",
        f"--port={port or free_port()}",
        "--dashboard-host=127.0.0.1",
        f"--temp-dir={os.path.join(temp_dir, 'ray')}",
        # Ports of its own: another Ray on this machine (a user's sweep) holds the default ones, and a job agent that
        # cannot bind its port leaves `ray job submit` with "No available agent".
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        *options,
    ]
    subprocess.run(start, env=env, check=True, capture_output=True, timeout=120)
    try:
        yield temp_dir
    finally:
        _stop_ray_of(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_ray_of(temp_dir: str) -> None:
    """End the Ray processes whose command line names this session's folder, and their children."""
    ours = [p for p in psutil.process_iter(["cmdline"]) if temp_dir in " ".join(p.info["cmdline"] or [])]
    family = {p.pid: p for p in ours}
    for process in ours:
        with contextlib.suppress(psutil.NoSuchProcess):
            family.update({c.pid: c for c in process.children(recursive=True)})
    for process in family.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(list(family.values()), timeout=30)


def test_readme_job_submission(head_node, tmp_path):
    env, dashboard = head_node
    with pytest.raises(urllib.error.HTTPError) as refused:  # the dashboard refuses requests without the token
        urllib.request.urlopen(f"{dashboard}/api/jobs/", timeout=10)
    assert refused.value.code == 401
    storage = tmp_path / "shared"
    submit = [
        "ray",
        "job",
        "submit",
        "--address",
        dashboard,
        "--working-dir",
        ".",
        "--",
        "sweeps",
        "run",
        "synthetic",
        "--address",
        "auto",
        "--storage",
        str(storage),
        "--name",
        "submitted",
        *SMALL_GRID,
    ]
    done = subprocess.run(submit, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "succeeded" in done.stdout
    trials = pd.read_parquet(storage / "submitted" / "trials.parquet")
    assert len(trials) == 4 and (trials.status == "TERMINATED").all()


def test_the_sweeps_ray_is_shut_down_before_the_command_says_how_it_ended(capsys):
    """Ray streams its processes' lines to the driver until it shuts down: a raylet's disk warning once came after
    `sweeps: interrupted: continue with ...` (tests/test_faults.py), so the session ends before those last lines.
    (Without the dashboard, as `--no-dashboard` starts it: no address to print; with it, the test below.)"""
    import ray

    from sweeps.cluster import ray_session
    from sweeps.errors import SweepInterrupted

    with pytest.raises(SweepInterrupted), ray_session(dashboard=False):
        assert ray.is_initialized()
        raise SweepInterrupted("/nowhere")
    assert not ray.is_initialized()
    assert "Ray dashboard" not in capsys.readouterr().out


def test_trial_workers_keep_one_malloc_arena(capsys):
    """A worker of the sweep's embedded Ray runs with one malloc arena (sweeps.cluster.ONE_MALLOC_ARENA), where the
    thread Tune trains in keeps the memory it frees (lstm_ae.allocator); cluster.yaml starts its nodes so."""
    import ray

    from sweeps.cluster import ray_session

    with mock.patch.dict(os.environ), ray_session():
        os.environ.pop("MALLOC_ARENA_MAX", None)  # (the test's own process may have one; the session sets it)
        assert ray.get(ray.remote(lambda: os.environ.get("MALLOC_ARENA_MAX")).remote()) == "1"
    assert "Ray dashboard: http://127.0.0.1:" in capsys.readouterr().out  # the dashboard, unless told otherwise
    config = yaml.safe_load(Path("cluster.yaml").read_text())
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("MALLOC_ARENA_MAX=1 " in command for command in starts if "ray start" in command)


def test_a_cluster_that_refuses_the_connection_is_named_as_the_cluster(monkeypatch):
    """Ray's ConnectionError is an OSError, which the command line would otherwise tell as a storage problem."""
    import ray

    from sweeps.cluster import start_ray
    from sweeps.errors import SweepError

    def refuse(**_):
        raise ConnectionError("ray client connection timeout\nmore detail")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(SweepError, match=r"could not connect to the Ray cluster at ray://10.0.0.9:10001 \(ray client"):
        start_ray("ray://10.0.0.9:10001")


@pytest.mark.parametrize("scheme", ["", "ray://"])  # a head node's GCS, or Ray Client's server
def test_an_address_where_no_cluster_answers_fails_in_seconds(tmp_path, scheme):
    port = free_port()  # a port nobody listens on
    started = time.monotonic()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sweeps",
            "run",
            "synthetic",
            "--address",
            f"{scheme}127.0.0.1:{port}",
            "--storage",
            str(tmp_path),
            "--name",
            "x",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert f"no Ray cluster answers at 127.0.0.1:{port} (--address {scheme}127.0.0.1:{port}" in done.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "x").exists()  # nothing written


def _autoscaling_config(gcs_address: str) -> dict:
    """Ray's fake multi-node provider (its nodes are raylets on this machine, started and stopped by the real
    autoscaler, the monitor `ray up` starts on a head) with node types shaped like cluster.yaml's: a head without a
    GPU, and GPU workers from 0 to 2 that come with the load (each a fake GPU and one CPU: its trial runs on the CPU,
    as torch finds no CUDA device). The rest is what the provider's own example config holds (the wheel leaves it out,
    so ray.cluster_utils.AutoscalingCluster cannot read it; that class would also `ray stop --force` every Ray on
    the machine)."""
    return {
        "cluster_name": "fake_multinode",
        "max_workers": 2,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": {
            "head": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "gpu_worker": {
                "resources": {"CPU": 1, "GPU": 1, "object_store_memory": 200_000_000},
                "node_config": {},
                "min_workers": 0,
                "max_workers": 2,
            },
        },
        "head_node_type": "head",
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": 5,
        "docker": {},
        "file_mounts": {},
        **{key: [] for key in ("initialization_commands", "setup_commands", "head_setup_commands")},
        **{key: [] for key in ("worker_setup_commands", "head_start_ray_commands", "worker_start_ray_commands")},
        **{key: [] for key in ("cluster_synced_files", "rsync_exclude", "rsync_filter")},
        "file_mounts_sync_continuously": False,
    }


def _raylet_of(node_id: str) -> psutil.Process | None:
    """The raylet of a fake node: the provider starts each with its node id in its environment."""
    for process in psutil.process_iter(["name"]):
        with contextlib.suppress(psutil.Error):
            if "raylet" in (process.info["name"] or "") and (
                process.environ().get("RAY_OVERRIDE_NODE_ID_FOR_TESTING") == node_id
            ):
                return process
    return None


@pytest.mark.timeout(400)
def test_the_autoscaler_starts_workers_as_trials_queue_and_a_worker_removed_mid_trial_costs_no_epoch(tmp_path):
    port = free_port()
    config = tmp_path / "autoscaling.json"
    config.write_text(json.dumps(_autoscaling_config(f"127.0.0.1:{port}")))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    with _head(env, ["--num-cpus=1", "--num-gpus=0", f"--autoscaling-config={config}"], port=port):
        sweep_dir = tmp_path / "scaled"
        options = ["--set", "n=1000", "--set", "hidden_size=10", "--set", "batch_size=32", "--set", "grad_clip=1"]
        options += ["--set", "lr=0.001,0.01"]
        driver = start_driver(
            *["run", "synthetic", "--address", f"127.0.0.1:{port}", "--storage", tmp_path, "--name", "scaled"],
            *["--gpus-per-trial", "1", "--epochs", "40", "--checkpoint-every", "5", "--no-early-stop", "--no-report"],
            *options,
            log=tmp_path / "driver.log",
            env={"RAY_AUTH_MODE": "token"},  # the head's: every client must bring the cluster's token
        )

        def a_trial_past_a_checkpoint_on_a_worker():
            for trial in trial_dirs(sweep_dir):
                epochs = [r["epoch"] for r in results_reported(trial)]
                if epochs and 10 <= max(epochs) < 30 and checkpoint_dirs(trial):
                    return results_reported(trial)[-1]["node_id"]
            return None

        node = wait_for(a_trial_past_a_checkpoint_on_a_worker, 240, "a trial mid-way on a worker node", driver)
        raylet = _raylet_of(node)
        assert raylet is not None, f"node {node} is not one the autoscaler started"
        for process in [raylet, *raylet.children(recursive=True)]:  # the worker node is gone, its trial with it
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        assert driver.wait(timeout=300) == 0, (tmp_path / "driver.log").read_text()[-3000:]

    trials, metrics = check_tables(sweep_dir, 2)  # every epoch once
    assert (trials.status == "TERMINATED").all() and (trials.epochs == 40).all()
    workers = set(metrics.node_id)
    assert all(_raylet_node(n) for n in workers) and len(workers) >= 2, workers  # only autoscaled workers ran trials
    # The trial on the removed worker went on from its last checkpoint there, not from its first epoch.
    (restart,) = metrics[metrics.resumed].itertuples()  # one trial restarted, once
    history = metrics[metrics.trial_id == restart.trial_id]
    assert node in set(history.node_id[history.epoch < restart.epoch]), history.to_string()  # it ran there
    assert restart.epoch > 1 and restart.epoch % 5 == 1  # from its last checkpoint (every 5 epochs)
    assert (history.node_id[history.epoch >= restart.epoch] != node).all()  # and went on on another worker


def _raylet_node(node_id: str) -> bool:
    """A node the fake provider made: its ids count up from ffff...0001 (the head's is Ray's own)."""
    return node_id.startswith("fffff") and not node_id.endswith("00000")


@contextlib.contextmanager
def _port_taken(port: int):
    """`port` on 127.0.0.1 held by a socket that listens and never answers. SO_REUSEADDR as servers set it (Ray's
    dashboard does): connections of an earlier test's dashboard that linger in TIME_WAIT do not keep this socket off
    the port, as they do not keep a dashboard off it. Where a live process holds it, the test waits until it lets go
    (an earlier test's Ray shutting down, which would free it mid-test)."""
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        wait_for(lambda: _bound(taken, port), 60, f"port {port} to be free")
        taken.listen()
        yield


def _bound(sock: socket.socket, port: int) -> bool:
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        return False
    return True


def test_a_taken_dashboard_port_and_another_local_ray_leave_the_sweep_its_own_and_its_true_address(tmp_path):
    """Ray's dashboard port (8265) held by something else, and another local Ray running, one that `ray start` made
    and recorded as the cluster ray.init() joins: the sweep, given no --address, starts its own Ray beside them, and
    the address it prints is the one its dashboard answers on."""
    with contextlib.ExitStack() as stack:
        stack.enter_context(_port_taken(8265))
        other = stack.enter_context(_head(os.environ.copy(), ["--num-cpus=1", "--include-dashboard=false"]))
        log = tmp_path / "driver.log"
        driver = start_driver(
            "run",
            "synthetic",
            "--storage",
            tmp_path,
            "--name",
            "beside",
            *TWO_SMALL_TRIALS,
            log=log,
            env={"RAY_TMPDIR": other},  # where the other Ray's address is recorded
            dashboard=True,
        )
        address = wait_for(
            lambda: next((line.split()[-1] for line in log.read_text().splitlines() if "Ray dashboard:" in line), None),
            120,
            "the dashboard's address",
            driver,
        )
        assert not address.endswith(":8265")
        with pytest.raises(urllib.error.HTTPError) as answered:  # Ray's dashboard, asking for its token
            urllib.request.urlopen(f"{address}/api/jobs/", timeout=10)
        assert answered.value.code == 401
        assert driver.wait(timeout=300) == 0, log.read_text()[-3000:]
        assert "Connecting to existing Ray cluster" not in log.read_text()
    trials, _ = check_tables(tmp_path / "beside", 2)
    assert (trials.status == "TERMINATED").all()
