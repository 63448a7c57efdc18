"""``metrics.csv``: one row per epoch, rewritten atomically after every epoch (main process)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from effdet.engine.callbacks.base import Callback
from effdet.engine.checkpointing import metric_columns, write_metrics_csv

if TYPE_CHECKING:
    from effdet.engine.trainer import Trainer


class MetricsCsv(Callback):
    """Writes ``<run>/metrics.csv`` from the run's rows (:func:`~effdet.engine.checkpointing.metric_columns`
    of the task, then any extra column such as ``ap_<class>``). A resumed run rewrites the file with
    the rows saved in ``last.pt``, so it holds every epoch exactly once."""

    def on_epoch_end(self, trainer: Trainer, row: dict[str, Any]) -> None:
        if trainer.ctx.is_main:
            task = trainer.task
            write_metrics_csv(trainer.state.metrics, trainer.output / "metrics.csv",
                              metric_columns(task.loss_names, task.metric_names))


__all__ = ["MetricsCsv"]
