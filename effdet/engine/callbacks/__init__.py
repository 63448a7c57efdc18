"""Callbacks of a training run: the events (:mod:`.base`) and the built-in ones (console lines,
``metrics.csv``, pictures, TensorBoard, MLflow). See ``docs/callbacks.md``."""

from __future__ import annotations

from effdet.engine.callbacks.base import EVENTS, Callback, Hook, StepEnd, fire

__all__ = ["EVENTS", "Callback", "Hook", "StepEnd", "fire"]
