"""Experiment tracking: recovery's training loss and a run's evaluation metrics in TensorBoard, Weights & Biases or
Trackio, the trackers TRL reports to.

`TrainConfig.report_to` names them (`none` by default). `recover` hands them to the TRL trainer with a run name
(the combination's name in `paser run`, else the output folder's) and the logs folder `OUT/logs`; `paser run`
then adds each combination's evaluation metrics to the same run (`log_eval_metrics`). The trackers' packages are
optional: asking for one that is not installed is refused at once, by name, and none is imported before it is
used. Offline-safe: W&B logs offline (`WANDB_MODE=offline`, synced later with `wandb sync`) when
`HF_HUB_OFFLINE` is set or its server cannot be reached, unless `WANDB_MODE` says otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from paser.common.io import write_atomic
from paser.common.registry import check_name

# Tracker name -> the package it needs.
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio"}
NO_TRACKER = "none"
LOGS_FOLDER = "logs"
PROJECT = "paser"
# What log_eval_metrics sent, so that a rerun with cached stages does not log the same metrics twice.
EVAL_LOGGED_FILE = "eval_metrics.json"
WANDB_SERVER = "https://api.wandb.ai"


def tracker_names(report_to: str | Sequence[str]) -> list[str]:
    """The trackers in `report_to` (a name or a list of names; `none` or an empty list: none), in order.

    Refuses (ValueError) an unknown name, listing the known ones, and a tracker whose package is not installed.
    """
    names = [report_to] if isinstance(report_to, str) else list(report_to)
    names = [name for name in names if name != NO_TRACKER]
    for name in names:
        check_name("report_to tracker", name, [*TRACKERS, NO_TRACKER])
        package = TRACKERS[name]
        if package not in sys.modules and importlib.util.find_spec(package) is None:
            raise ValueError(
                f"report_to {name!r} needs the {package} package, which is not installed: pip install {package}"
            )
    return names


def logging_dir(out_dir: str | Path) -> Path:
    """The folder a recovery run's trackers write to: `OUT/logs`."""
    return Path(out_dir) / LOGS_FOLDER


def trainer_args(report_to: str | Sequence[str], run_name: str) -> dict[str, Any]:
    """The TrainingArguments that pass the trackers to a TRL trainer: `report_to` (an empty list for none, so no
    integration installed by chance reports), `run_name` and the Trackio `project`."""
    return {"report_to": tracker_names(report_to), "run_name": run_name, "project": PROJECT}


def wandb_offline() -> bool:
    """True when W&B cannot reach its server: `HF_HUB_OFFLINE` is set, or a connection to it does not open."""
    from huggingface_hub import constants

    from paser.recovery.models import hub_reachable

    return bool(constants.HF_HUB_OFFLINE) or not hub_reachable(os.environ.get("WANDB_BASE_URL", WANDB_SERVER))


def _run_id(log_dir: Path) -> str:
    """A W&B run id fixed by the logs folder, so training and evaluation log into one run."""
    return hashlib.sha256(str(log_dir.resolve()).encode()).hexdigest()[:16]


@contextlib.contextmanager
def tracking_environment(report_to: str | Sequence[str], log_dir: Path) -> Iterator[None]:
    """Set, for the duration, the environment the trackers read when a trainer is built and trains, then restore
    it: TensorBoard's `TENSORBOARD_LOGGING_DIR`, W&B's `WANDB_DIR`, run id (resumable), project and offline mode,
    Trackio's `TRACKIO_DIR` (read when trackio is first imported). Variables the user set are kept."""
    names = tracker_names(report_to)
    values: dict[str, str] = {}
    if "tensorboard" in names:
        values["TENSORBOARD_LOGGING_DIR"] = str(log_dir)
    if "wandb" in names:
        values.update(WANDB_DIR=str(log_dir), WANDB_RUN_ID=_run_id(log_dir), WANDB_RESUME="allow")
        values.update({"WANDB_PROJECT": PROJECT} if "WANDB_PROJECT" not in os.environ else {})
        values.update({"WANDB_MODE": "offline"} if "WANDB_MODE" not in os.environ and wandb_offline() else {})
    if "trackio" in names and "TRACKIO_DIR" not in os.environ:
        values["TRACKIO_DIR"] = str(log_dir)
    if values:
        log_dir.mkdir(parents=True, exist_ok=True)
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _log_tensorboard(log_dir: Path, metrics: dict[str, float], step: int) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(log_dir))
    for name, value in metrics.items():
        writer.add_scalar(name, value, step)
    writer.close()


def _log_wandb(log_dir: Path, run_name: str, metrics: dict[str, float], step: int) -> None:
    import wandb

    # The training run's own step axis (transformers' W&B integration logs train/global_step).
    run = wandb.init(
        project=os.environ.get("WANDB_PROJECT", PROJECT), name=run_name, id=_run_id(log_dir), resume="allow"
    )
    run.log({**metrics, "train/global_step": step})
    run.finish()


def _log_trackio(run_name: str, metrics: dict[str, float], step: int) -> None:
    import trackio

    trackio.init(project=PROJECT, name=run_name, resume="allow")
    trackio.log(metrics, step=step)
    trackio.finish()


def log_eval_metrics(
    report_to: str | Sequence[str], recover_dir: str | Path, run_name: str, metrics: dict[str, float] | None
) -> bool:
    """Log a recovered model's evaluation metrics (`eval/<name>`) to the trackers of its training run, at its
    last training step, in its logs folder (`recover_dir/logs`); returns whether anything was logged.

    Nothing is logged without trackers or metrics, nor when the same metrics were already logged for the same
    training (`logs/eval_metrics.json`), so a rerun whose stages are cached adds no duplicate points.
    """
    names = tracker_names(report_to)
    if not names or not metrics:
        return False
    record_path = Path(recover_dir) / "recovery.json"
    step = json.loads(record_path.read_text(encoding="utf-8"))["training"]["steps"] if record_path.exists() else 0
    log_dir = logging_dir(recover_dir)
    logged = {"run_name": run_name, "step": step, "metrics": {f"eval/{name}": value for name, value in metrics.items()}}
    marker = log_dir / EVAL_LOGGED_FILE
    if marker.exists() and json.loads(marker.read_text(encoding="utf-8")) == logged:
        return False
    with tracking_environment(names, log_dir):
        if "tensorboard" in names:
            _log_tensorboard(log_dir, logged["metrics"], step)
        if "wandb" in names:
            _log_wandb(log_dir, run_name, logged["metrics"], step)
        if "trackio" in names:
            _log_trackio(run_name, logged["metrics"], step)
    write_atomic(marker, lambda staging: staging.write_text(json.dumps(logged, indent=2), encoding="utf-8"))
    return True
