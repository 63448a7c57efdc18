"""MLflow tracking (``train.logger: mlflow``): the run's settings as parameters, the per-epoch
metrics (the TensorBoard tags: ``train/loss``, ``val/map``, ...) at step = epoch, and at the end the
pictures, ``metrics.csv`` and ``best.pt`` as artifacts.

MLflow is optional: ``pip install -e ".[mlflow]"`` (``mlflow-skinny``, the client without the server
and its database). It logs where ``MLFLOW_TRACKING_URI`` points (a server ``http://HOST:5000``, or
local files with ``file:./mlruns`` and ``MLFLOW_ALLOW_FILE_STORE=true``), into the experiment
``MLFLOW_EXPERIMENT_NAME`` (default ``effdet``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from effdet.config import ConfigError
from effdet.engine.callbacks.base import Callback, logger_package
from effdet.engine.callbacks.tensorboard import epoch_scalars

if TYPE_CHECKING:
    from effdet.engine.trainer import Trainer, TrainResult


class MLflowLogger(Callback):
    """One MLflow run per training run, named after the run folder (main process only; make it
    there). A resumed run starts a new MLflow run whose steps continue the epochs.

    Raises:
        ConfigError: MLflow is missing (:meth:`check`), or no run can be started where
            ``MLFLOW_TRACKING_URI`` points (says how to choose a tracking store).
    """

    @staticmethod
    def check() -> None:
        """Raise :class:`ConfigError` (what to install) when MLflow is missing."""
        logger_package("mlflow", "mlflow", "mlflow-skinny")

    def __init__(self, output: str | Path) -> None:
        self.mlflow = mlflow = logger_package("mlflow", "mlflow", "mlflow-skinny")
        try:
            mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", "effdet"))
            self.run = mlflow.start_run(run_name=Path(output).name)
        except Exception as e:  # noqa: BLE001 - any store error: say how to choose one
            raise ConfigError(f"train.logger=mlflow cannot log to {mlflow.get_tracking_uri()} "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); set MLFLOW_TRACKING_URI to a "
                              "tracking server (http://HOST:5000), or to file:./mlruns with "
                              "MLFLOW_ALLOW_FILE_STORE=true for local files") from None

    def on_run_start(self, trainer: Trainer) -> None:
        flat = {f"{section}.{key}": value for section, values in trainer.task.run_config().items()
                if isinstance(values, dict) for key, value in values.items()}
        self.mlflow.log_params({key: str(value)[:500] for key, value in flat.items()})
        trainer.outputs.append(f"MLflow: run {self.run.info.run_id} at {self.mlflow.get_tracking_uri()}")

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        task = trainer.task
        self.mlflow.log_metrics(epoch_scalars(row, task.loss_names, task.metric_names), step=int(row["epoch"]))

    def on_run_end(self, trainer: Trainer, result: TrainResult) -> None:
        for name in [*dict.fromkeys(trainer.pictures), "metrics.csv", "best.pt"]:
            if (trainer.output / name).is_file():
                self.mlflow.log_artifact(str(trainer.output / name))

    def close(self) -> None:
        self.mlflow.end_run()


__all__ = ["MLflowLogger"]
