"""Optional experiment trackers (off by default): TensorBoard and MLflow through their standard APIs.

`report_to: [tensorboard, mlflow]` mirrors every metrics.jsonl record to RUN/tensorboard and to MLflow
(a local file store RUN/mlruns unless MLFLOW_TRACKING_URI is set). metrics.jsonl stays the source of truth.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from tuneforge.errors import ConfigError

PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow"}


def check_available(report_to: list[str]) -> None:
    """Fail before anything is written when a requested tracker is not installed."""
    for name in report_to:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise ConfigError(f"report_to: '{name}' needs the {PACKAGES[name]} package "
                              f"(pip install 'tuneforge[tracking]')")


@dataclass
class Trackers:
    tensorboard: object | None = None
    mlflow: object | None = None

    def log(self, rec: dict) -> None:
        step = int(rec["step"])
        scalars = {k: float(v) for k, v in rec.items() if k not in ("step",) and isinstance(v, (int, float))}
        if self.tensorboard is not None:
            for k, v in scalars.items():
                self.tensorboard.add_scalar(("val/" if k.startswith(("val", "best")) else "train/") + k, v, step)
            self.tensorboard.flush()
        if self.mlflow is not None:
            self.mlflow.log_metrics(scalars, step=step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.mlflow is not None:
            self.mlflow.end_run()


def open_trackers(report_to: list[str], out: Path, params: dict) -> Trackers:
    t = Trackers()
    if "tensorboard" in report_to:
        from torch.utils.tensorboard import SummaryWriter

        t.tensorboard = SummaryWriter(log_dir=str(out / "tensorboard"))
    if "mlflow" in report_to:
        import mlflow

        if not os.environ.get("MLFLOW_TRACKING_URI"):
            # a local file store needs no server; MLflow 3 asks for an explicit opt-in to it
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            mlflow.set_tracking_uri((out / "mlruns").resolve().as_uri())
        mlflow.set_experiment("tuneforge")
        mlflow.start_run(run_name=out.name)
        mlflow.log_params({k: str(v)[:250] for k, v in params.items()})
        t.mlflow = mlflow
    return t
