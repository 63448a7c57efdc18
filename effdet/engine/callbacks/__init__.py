"""Callbacks of a training run: the events (:mod:`.base`) and the built-in callbacks: the terminal
lines (:class:`ConsoleLogger`), ``metrics.csv`` (:class:`MetricsCsv`) and the loggers chosen with
``train.logger`` (:data:`LOGGERS`: TensorBoard, MLflow). See ``docs/callbacks.md``."""

from __future__ import annotations

from effdet.engine.callbacks.base import EVENTS, Callback, Hook, StepEnd, fire, log_due
from effdet.engine.callbacks.console import ConsoleLogger
from effdet.engine.callbacks.metrics import MetricsCsv
from effdet.engine.callbacks.mlflow import MLflowLogger
from effdet.engine.callbacks.tensorboard import TensorBoardLogger

LOGGERS: dict[str, type[Callback]] = {"tensorboard": TensorBoardLogger, "mlflow": MLflowLogger}
"""``train.logger`` values and their callbacks: ``Logger.check()`` raises ``ConfigError`` when its
package is missing (called before the run folder is claimed), ``Logger(output)`` opens it (main
process only)."""

__all__ = ["EVENTS", "LOGGERS", "Callback", "ConsoleLogger", "Hook", "MLflowLogger", "MetricsCsv", "StepEnd",
           "TensorBoardLogger", "fire", "log_due"]
