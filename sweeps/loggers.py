"""The opt-in loggers of `sweeps run --logger NAME`: which exist, what each needs, the checks of what would fail in
their set-up (all before Ray starts), and Ray Tune's own logger callbacks for them.

    loggers.check_installed(["tensorboard"])      # SweepError naming the missing package and its extra
    loggers.check_reachable(["mlflow"], remote=True)
    callbacks = loggers.callbacks(["wandb"], sweep_dir)
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

from sweeps import storage
from sweeps.errors import SweepError, first_line

# --logger NAME: the module Ray Tune's logger callback needs, and the project's extra that installs it.
LOGGERS = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb"), "mlflow": ("mlflow", "mlflow")}
MLFLOW_FILE = "mlflow.db"  # a local sweep's own MLflow store, in its folder


def check_installed(names: list[str]) -> None:
    """Each name is a logger whose package is installed, or a SweepError saying which extra installs it."""
    for name in names:
        if name not in LOGGERS:
            raise SweepError(f"unknown --logger {name!r}: choose among {', '.join(LOGGERS)}")
        module, extra = LOGGERS[name]
        if importlib.util.find_spec(module) is None:
            raise SweepError(
                f"--logger {name} needs the {module} package: install it with `.venv/bin/pip install -e '.[{extra}]'`"
            )


def installed(names) -> list[str]:
    """Those of `names` whose package is installed."""
    return [name for name in names if importlib.util.find_spec(LOGGERS[name][0])]


def check_reachable(names: list[str], remote: bool) -> None:
    """What would fail in the loggers' set-up, found before Ray starts: W&B without a login (unless offline); MLflow
    for a sweep on remote storage (`remote`) without a tracking server, or with one that does not answer (a local
    sweep keeps its own SQLite store)."""
    offline = os.environ.get("WANDB_MODE") in ("offline", "disabled")
    if "wandb" in names and not offline and not os.environ.get("WANDB_API_KEY"):
        import wandb  # the same sources of a key as WandbLoggerCallback.setup (ray/air/integrations/wandb.py)

        if not wandb.login(prompt=False, verify=False):
            raise SweepError(
                "--logger wandb finds no W&B login: run `wandb login`, set WANDB_API_KEY, or set WANDB_MODE=offline "
                "to keep the runs on disk (`wandb sync` uploads them later)"
            )
    if "mlflow" in names and remote:
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # MLflow would fall back to ./mlflow.db on the driver, away from the sweep
            raise SweepError(
                "--logger mlflow with remote --storage needs MLFLOW_TRACKING_URI, the MLflow server to log to "
                "(a sweep in a local folder keeps its own mlflow.db)"
            )
        if uri.startswith(("http://", "https://")):
            _check_mlflow_server(uri)


def _check_mlflow_server(uri: str) -> None:
    import mlflow

    try:
        # One try, not MLflow's minutes of retries: a server that does not answer is named at once.
        with environment(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10"):
            mlflow.MlflowClient(uri).search_experiments(max_results=1)
    except Exception as error:  # MLflow's own errors, whatever went wrong
        raise SweepError(
            f"--logger mlflow: no MLflow server answers at {uri} (MLFLOW_TRACKING_URI: {first_line(error)}): start "
            "it, or point MLFLOW_TRACKING_URI at one that answers"
        ) from None


@contextlib.contextmanager
def environment(**variables: str):
    """These environment variables set for the block, and put back as they were after it (what loggers read)."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def callbacks(names: list[str], sweep_dir: str) -> list:
    """Ray Tune's own logger callbacks for --logger; Ray pickles them with the Tuner, so resume keeps them.
    TensorBoard writes events in each trial's folder (`tensorboard --logdir SWEEP`); MLflow, for a local sweep, an
    SQLite store in the sweep folder (`mlflow ui --backend-store-uri sqlite:///SWEEP/mlflow.db`; MLflow 3 refuses
    its old file store), elsewhere MLFLOW_TRACKING_URI's server; W&B its project named after the sweep
    (WANDB_MODE=offline keeps it on disk)."""
    name = storage.parent_and_name(sweep_dir)[1]
    made = []
    for logger in names:
        if logger == "tensorboard":
            from ray.tune.logger import TBXLoggerCallback

            made.append(TBXLoggerCallback())
        elif logger == "wandb":
            from ray.air.integrations.wandb import WandbLoggerCallback

            # The driver's WANDB_MODE and WANDB_DIR, given to W&B's logging actor, which Ray starts with the
            # cluster's environment (ray/air/integrations/wandb.py forwards only the API key).
            where = {
                key: os.environ[var] for key, var in (("mode", "WANDB_MODE"), ("dir", "WANDB_DIR")) if var in os.environ
            }
            made.append(WandbLoggerCallback(project=name, **where))
        elif logger == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            uri = f"sqlite:///{storage.join(sweep_dir, MLFLOW_FILE)}" if storage.is_local(sweep_dir) else None
            made.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name=name))
    return made
