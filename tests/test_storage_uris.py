"""Sweeps on storage URIs, end to end: a real S3 API (moto's server on 127.0.0.1, started here) and file://.
`run`, `status`, `report`, `resume` and `evaluate` all read and write through the URI, as on a cluster."""

import json
import os
import socket
import subprocess
import sys
import time

import pyarrow.fs
import pytest

from tests.sweeping import TWO_SMALL_TRIALS, free_port, sweeps_cli

pytestmark = pytest.mark.ray  # starts Ray: not in `make test-fast`

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_endpoint():
    """moto's S3 server on a free loopback port, with a bucket; its address."""
    port = free_port()
    server = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        endpoint = f"127.0.0.1:{port}"
        s3 = pyarrow.fs.S3FileSystem(
            endpoint_override=endpoint,
            scheme="http",
            allow_bucket_creation=True,
            access_key="test",
            secret_key="test",
            region="us-east-1",
        )
        s3.create_dir("sweeps")
        yield endpoint
    finally:
        server.terminate()
        server.wait(timeout=30)


def _cli(*args, timeout=300):
    return sweeps_cli(*args, timeout=timeout, env={**os.environ, **CREDENTIALS})


def _uri_check(storage_uri: str, read_text):
    """run, then status, report, resume and evaluate on the sweep's URI; `read_text(name)` reads a file of the sweep."""
    done = _cli("run", "synthetic", "--storage", storage_uri, "--name", "remote", *TWO_SMALL_TRIALS)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep = done.stdout.strip().splitlines()[-1].removeprefix("report: ").replace("/report.md", "")
    assert sweep.startswith(storage_uri.split("?")[0].rstrip("/") + "/remote")

    state = json.loads(_cli("status", sweep, "--json").stdout)
    assert state["done"] and state["counts"]["finished"] == 2 and state["best"]["value"] > 0

    reported = _cli("report", sweep)
    assert reported.returncode == 0, reported.stderr[-3000:]
    report = read_text("report.md")
    assert "## Best trial" in report and "(figures/curves.png)" in report and read_text("figures/curves.png")

    resumed = _cli("resume", sweep, "--no-report")  # restores Ray's state from the URI: nothing left to run
    assert resumed.returncode == 0 and "2 finished" in resumed.stdout, resumed.stderr[-3000:]

    checkpoint = report.split("    sweeps evaluate ", 1)[1].splitlines()[0].strip("'")
    evaluated = _cli("evaluate", checkpoint, "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert f"| mse | {json.loads(evaluated.stdout)['mse']:.6g} |" in report


def test_a_sweep_on_s3(s3_endpoint):
    options = f"endpoint_override={s3_endpoint}&scheme=http"
    s3 = pyarrow.fs.S3FileSystem(
        endpoint_override=s3_endpoint, scheme="http", access_key="test", secret_key="test", region="us-east-1"
    )

    def read_text(name):
        with s3.open_input_stream(f"sweeps/results/remote/{name}") as stream:
            data = stream.readall()
        return data.decode(errors="replace") if name.endswith(".md") else data

    _uri_check(f"s3://sweeps/results?{options}", read_text)


def test_a_sweep_on_a_file_uri(tmp_path):
    def read_text(name):
        path = tmp_path / "remote" / name
        return path.read_text() if name.endswith(".md") else path.read_bytes()

    _uri_check(f"file://{tmp_path}", read_text)
