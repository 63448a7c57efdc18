"""Training engine: the train loop, its tasks and callbacks, optimizer/schedule, EMA, distributed helpers.

Training (``effdet.engine.trainer``): ``load_run_config`` reads a recipe YAML (``model:``,
``data:``, ``train:`` sections) with ``key=value`` overrides into a ``RunConfig``, and
``Trainer(run, output).fit()`` (or ``train(run, output, callbacks=[...])``) trains it as a
``DetectionTask``; any :class:`~effdet.engine.task.Task` (classification:
``effdet.engine.classification``) trains on the same loop. Callbacks (``Callback``, ``Hook``) receive
the run's events (``docs/callbacks.md``). Evaluation is :mod:`effdet.evaluation` (``evaluate_coco``),
data analysis :mod:`effdet.analysis`.

The names below load on first use (PEP 562): the command line reads the recipe settings of
``effdet.engine.train_config`` (no PyTorch) to build its ``--help`` without importing the trainer.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainState": "checkpointing", "resume_path": "checkpointing", "resume_run_config": "checkpointing",
    "ModelEma": "ema",
    "WarmupCosine": "optim", "build_optimizer": "optim", "param_groups": "optim", "scaled_lr": "optim",
    "DataConfig": "train_config", "RunConfig": "train_config", "TrainConfig": "train_config",
    "load_run_config": "train_config", "write_run_config": "train_config",
    "Trainer": "trainer", "TrainingDiverged": "trainer", "TrainResult": "trainer", "train": "trainer",
    "Task": "task", "Evaluation": "task", "DetectionTask": "detection",
    "Callback": "callbacks", "Hook": "callbacks", "StepEnd": "callbacks",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'effdet.engine' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"effdet.engine.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


__all__ = sorted(_EXPORTS)
