"""Ray itself: join a running cluster, or start the embedded local one on loopback; check addresses and
resources before a sweep waits on them.
"""

from __future__ import annotations

import contextlib
import os
import socket
import urllib.parse

from sweeps import signals
from sweeps.errors import SweepError, first_line
from sweeps.sweep import Sweep

LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def keep_ray_local(address: str | None) -> None:
    """What keeps an embedded Ray to this machine, set before Ray is imported where possible (the command line).
    Never when joining a cluster, whose nodes must reach each other."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray would otherwise send usage reports out
    if not address and not os.environ.get("RAY_ADDRESS"):
        # With it "0", Ray uses and binds 127.0.0.1 only (ray/_private/services.py get_node_ip_address,
        # ray-project/ray#18730): nothing of the local cluster is reachable from other hosts.
        os.environ.setdefault(LOOPBACK_SWITCH, "0")


def _keep_imported_ray_local() -> None:
    """The Python API may have imported Ray before start_ray: Ray read the switch into a constant at import
    (ray/_private/ray_constants.py ENABLE_RAY_CLUSTER), so set that too; the processes it starts read the variable."""
    keep_ray_local(None)
    if os.environ[LOOPBACK_SWITCH] == "0":
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


def check(address: str | None = None, sweep: Sweep | None = None) -> None:
    """Before anything is written or started: a cluster answers where one is named (--address, or RAY_ADDRESS in
    the environment, which Ray would otherwise wait on for minutes), or this machine has what each trial asks for."""
    if address:
        check_cluster(address, "--address")
    elif os.environ.get("RAY_ADDRESS"):
        check_cluster(os.environ["RAY_ADDRESS"], "RAY_ADDRESS in the environment")
    else:
        check_temp_dir()
        check_token_home()
        if sweep is not None:
            _check_fits(sweep, machine_resources())  # a cluster may autoscale; this machine will not
            _check_precisions(sweep)  # a cluster's trials check their own node: its head may be CPU-only


# The longest Unix socket path Ray makes under its temporary folder (ray/_private/node.py: a session folder named
# session_<date>_<microseconds>_<pid>, its sockets/plasma_store), and the longest such a path may be (108 bytes with
# its terminating zero, ray/_private/utils.py validate_socket_filepath).
RAY_SOCKET = os.path.join("ray", "session_2026-01-01_00-00-00_000000_4194304", "sockets", "plasma_store.9")
SOCKET_PATH_MAX = 107


def ray_temp_dir() -> tuple[str, str]:
    """(the folder the embedded Ray will make its files and sockets in, what chose it), by Ray's own rule
    (ray/_common/utils.py get_default_system_temp_dir): RAY_TMPDIR, else TMPDIR, else /tmp."""
    for variable in ("RAY_TMPDIR", "TMPDIR"):
        if os.environ.get(variable):
            return os.environ[variable], variable
    return "/tmp", "the default"


def check_token_home() -> None:
    """The embedded Ray can keep its token: with token authentication (Ray's default for a local cluster) and no
    token given (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH) or kept (~/.ray/auth_token), Ray writes one there, and an
    unwritable home made it fail with a bare FileNotFoundError, which read as a storage problem."""
    if os.environ.get("RAY_AUTH_MODE", "token").lower() != "token":
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return
    home = os.path.expanduser("~")
    keeps = os.path.join(home, ".ray")
    if os.path.isfile(os.path.join(keeps, "auth_token")):
        return
    writable = keeps if os.path.isdir(keeps) else home
    if not os.path.isdir(writable) or not os.access(writable, os.W_OK | os.X_OK):
        raise SweepError(
            f"Ray keeps its dashboard token in {keeps}/auth_token, and {writable} (HOME) is not a writable folder: set "
            "HOME to a writable folder, or give Ray a token with RAY_AUTH_TOKEN_PATH"
        )


def check_temp_dir() -> None:
    """The embedded Ray's temporary folder is writable and short enough for its Unix sockets: Ray's own failures
    there name neither the folder nor the variable."""
    folder, chosen_by = ray_temp_dir()
    fix = "set RAY_TMPDIR to a short writable folder, such as /tmp (Ray's files and sockets go there)"
    longest = len(os.path.join(folder, RAY_SOCKET).encode())
    if longest > SOCKET_PATH_MAX:
        raise SweepError(
            f"the temporary folder {folder} ({chosen_by}) is too long for the Unix sockets Ray makes in it "
            f"({longest} bytes with Ray's own path under it, at most {SOCKET_PATH_MAX}): {fix}"
        )
    if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
        raise SweepError(f"the temporary folder {folder} ({chosen_by}) is not a writable folder: {fix}")


# Trial workers with one malloc arena: Tune trains in a thread of the worker, and glibc gives such a thread an arena
# of its own, which maps every buffer over 64 MB afresh each time however the process is told to keep freed memory
# (lstm_ae.allocator), which made a pixel step half as slow again (docs/performance.md). glibc reads it as a
# process starts: the embedded Ray's processes inherit it from the driver, a cluster's from `ray start`
# (cluster.yaml).
ONE_MALLOC_ARENA = ("MALLOC_ARENA_MAX", "1")


def start_ray(address: str | None = None, dashboard: bool = True) -> None:
    """Join the cluster at `address` (or RAY_ADDRESS), or start the embedded local one on 127.0.0.1, with its
    dashboard unless `dashboard` is False (the dashboard's processes cost each start about 4 CPU-seconds)."""
    import ray

    if address or os.environ.get("RAY_ADDRESS"):
        try:
            context = ray.init(address=address)  # None: Ray reads RAY_ADDRESS
        except (ConnectionError, TimeoutError) as error:  # OSErrors, but of the cluster, not of a path
            named = address or f"{os.environ['RAY_ADDRESS']} (RAY_ADDRESS)"
            raise SweepError(
                f"could not connect to the Ray cluster at {named} ({first_line(error)}): check that it is up and "
                "that this machine reaches it"
            ) from None
    else:
        _keep_imported_ray_local()
        os.environ.setdefault(*ONE_MALLOC_ARENA)  # read by Ray's processes as they start (a user's own value stays)
        # "local": a Ray of its own even where `ray start` left a cluster on this machine, which ray.init() with no
        # address joins (ray/_private/services.py get_ray_address_from_environment): the sweep would run on it with
        # its resources, unchecked, and end with it.
        context = ray.init(address="local", include_dashboard=dashboard, dashboard_host="127.0.0.1")
    if context.dashboard_url:
        print(f"Ray dashboard: http://{context.dashboard_url}", flush=True)


@contextlib.contextmanager
def ray_session(address: str | None = None, dashboard: bool = True):
    """Ray for the length of a sweep (start_ray), shut down before the command prints its last lines: Ray streams
    its processes' output to this one, and a line of theirs (a raylet's warning that the disk is nearly full) came
    after `sweeps: interrupted: continue with ...`, which must be the last thing a user reads."""
    import ray

    try:
        with signals.handlers_kept():  # (which may raise a stop signal once Ray has started: shut down below)
            start_ray(address, dashboard)
        yield
    finally:
        ray.shutdown()  # a joined cluster only loses this driver


def check_cluster(address: str, given_as: str = "--address", timeout_s: float = 5.0) -> None:
    """Fail in seconds where no Ray cluster answers at `address`: Ray itself retries for minutes."""
    if address.startswith("ray://"):
        _check_answers(*_client_host_port(address, given_as), address, given_as, timeout_s, CLIENT_HINT)
        return
    # Ray's own resolution of `auto` (RAY_ADDRESS, then the last `ray start` on this machine) and of host:port.
    from ray._private.services import canonicalize_bootstrap_address

    if given_as == "--address":
        hint = (
            "start one with `ray start --head` or `ray up cluster.yaml`, or leave out --address to run on a local Ray"
        )
    else:
        hint = "start the cluster it names, or unset RAY_ADDRESS to run on a local Ray"
    try:
        resolved = canonicalize_bootstrap_address(address)
        host, _, port = (resolved or "").rpartition(":")
        port = int(port) if resolved else None
    except ValueError as error:
        raise SweepError(f"{given_as} {address} is not a Ray address ({error}): use auto or host:port") from None
    if not resolved:
        raise SweepError(f"no running Ray cluster found for {given_as} {address}: {hint}")
    _check_answers(host, port, address, given_as, timeout_s, hint)


# Ray Client's server listens on the head node's port 10001 unless `ray start --ray-client-server-port` says otherwise.
CLIENT_PORT = 10001
CLIENT_HINT = "start the cluster (`ray start --head` serves Ray Client on port 10001) or check the host and port"


def _client_host_port(address: str, given_as: str) -> tuple[str, int]:
    parts = urllib.parse.urlsplit(address)  # ray://host[:port], IPv6 hosts in brackets
    try:
        port = parts.port or CLIENT_PORT
    except ValueError:
        raise SweepError(f"{given_as} {address}: the port must be a number, as in ray://host:10001") from None
    if not parts.hostname:
        raise SweepError(f"{given_as} {address}: no host, as in ray://host:10001")
    return parts.hostname, port


def _check_answers(host: str, port: int, address: str, given_as: str, timeout_s: float, hint: str) -> None:
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except (OSError, OverflowError) as error:
        reason = getattr(error, "strerror", None) or error
        raise SweepError(f"no Ray cluster answers at {host}:{port} ({given_as} {address}: {reason}): {hint}") from None


def machine_resources() -> dict:
    """What the embedded Ray will see on this machine: the CPUs this process may use, and the visible GPUs."""
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"CPU": cpus or 1, "GPU": torch.cuda.device_count()}


def _check_precisions(sweep: Sweep) -> None:
    """Every precision of the sweep runs on the device this machine's trials get (a GPU where they ask for one)."""
    from lstm_ae.precision import unavailable

    device = "cuda" if sweep.gpus_per_trial else "cpu"
    for precision in sweep.values("precision"):
        if reason := unavailable(precision, device):
            raise SweepError(f"{reason}; or run on a cluster whose nodes have it (--address)")


def _check_fits(sweep: Sweep, resources: dict) -> None:
    for name, wanted in (("GPU", sweep.gpus_per_trial), ("CPU", sweep.cpus_per_trial)):
        if wanted > resources.get(name, 0):
            raise SweepError(
                f"each trial asks for {wanted:g} {name}s but this machine has {resources.get(name, 0):g}: "
                f"lower --{name.lower()}s-per-trial, or run on a cluster with --address"
            )
