"""Training checkpoints (``last.pt``, ``best.pt``), RNG states and the ``metrics.csv`` log.

``last.pt`` is a regular project checkpoint (``effdet.factory.load_model`` reads it, using
the EMA weights) plus everything needed to continue the run exactly where it stopped:

    model        raw (non-EMA) weights          ema, ema_updates   averaged weights, update count
    optimizer    optimizer state dict           scaler             GradScaler state (fp16 AMP) or None
    train_state  TrainState as a dict           run_config         RunConfig.to_dict()
    rng          per-rank RNG states (torch, numpy, random, cuda) as tensors / lists

``best.pt`` holds only the evaluated (EMA) weights as ``model`` plus ``epoch`` and ``map``.
Everything is tensors and plain Python data, so files load with ``weights_only=True``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from effdet.config import ConfigError, shown
from effdet.fileio import atomic_write
from effdet.weights.checkpoint import CheckpointError, load_weights, read_checkpoint, state_dict_problem
from effdet.engine.optim import load_optimizer_state
from effdet.engine.train_config import RunConfig, load_run_config



def metric_columns(loss_names: Sequence[str], metric_names: Sequence[str]) -> tuple[str, ...]:
    """The fixed columns of a task's ``metrics.csv``: ``epoch``, ``step``, the losses, ``lr``, the
    evaluation metrics, ``images``, ``skipped_images``, ``images_per_s``, ``time_s``, ``epochs`` (the
    planned number of epochs, refitted each epoch under ``train.time``) and ``stop`` (on the last row:
    why the run ended: ``epochs``, ``patience``, ``time``). Any other column a row has (detection:
    per-class AP ``ap_<class name>``) follows them."""
    return ("epoch", "step", *loss_names, "lr", *metric_names, "images", "skipped_images", "images_per_s",
            "time_s", "epochs", "stop")


METRIC_COLUMNS = metric_columns(("loss", "class_loss", "box_loss"), ("map", "map50"))
"""The fixed columns of a detection run's ``metrics.csv`` (:func:`metric_columns`)."""

PER_CLASS_PREFIX = "ap_"


@dataclass
class TrainState:
    """Progress counters of a run; saved in ``last.pt`` and restored on resume.

    ``epoch`` is the 0-based epoch in progress (or next to start) and ``step_in_epoch`` the
    number of its batches already trained on. ``best_fitness`` is the best evaluation's fitness
    (detection: mAP@[.5:.95]) and ``best_epoch`` its epoch (1-based). ``train_time_s`` counts training
    steps only, ``run_time_s`` the whole run with evaluations and saving (what ``train.time``
    budgets). ``sums`` accumulates this epoch's totals (each loss, ``steps``, ``images``, ``skipped``,
    ``read``) for its metrics row; ``metrics`` holds the rows of the epochs done.
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    steps_per_epoch: int = 0
    best_fitness: float | None = None
    best_epoch: int | None = None
    train_time_s: float = 0.0
    run_time_s: float = 0.0
    skipped_images: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainState":
        names = {f.name for f in dataclasses.fields(cls)}
        data = {"best_fitness": data.get("best_map"), **data}  # last.pt of detection runs before best_fitness
        return cls(**{k: v for k, v in data.items() if k in names})


def rng_states() -> dict[str, Any]:
    """This process's RNG states as tensors and plain lists (``weights_only``-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "random": [version, list(internal), gauss],
    }


def set_rng_states(state: dict[str, Any]) -> None:
    """Restore states saved by :func:`rng_states`."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))


def resume_path(path: str | Path) -> Path:
    """``--resume`` argument to a checkpoint file: a ``last.pt`` or an output folder holding one."""
    path = Path(path)
    if path.is_dir():
        path = path / "last.pt"
    if not path.is_file():
        raise CheckpointError(f"cannot resume: {path} does not exist; pass the run's last.pt or its output folder")
    return path


def read_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read ``last.pt`` for resuming: every part of its training state is checked
    (:func:`check_training_state`) before anything is restored or printed.

    Raises:
        CheckpointError: not a resumable checkpoint, or a malformed part; one line naming the
            file and the part, saying what to do.
    """
    obj = read_checkpoint(path)
    missing = [k for k in ("train_state", "optimizer", "run_config") if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is not a resumable training checkpoint (it has no {', '.join(missing)}). "
                              "Resume from the run's last.pt, or start a new run from its weights with --weights.")
    check_training_state(obj, path)
    return obj


def resume_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The run config stored in a ``last.pt``, with ``key=value`` overrides (e.g. more epochs) applied."""
    stored = read_training_checkpoint(path)["run_config"]
    try:
        load_run_config(stored)
    except ConfigError as error:
        _resume_error(path, "run_config", f"is not a valid run config ({error})")
    return load_run_config(stored, overrides)


def _resume_error(path: str | Path, part: str, problem: str) -> None:
    raise CheckpointError(f"cannot resume from {path}: its '{part}' {problem}. The file is damaged or was written "
                          "by other code: resume from another last.pt, or start a new run from its weights with "
                          f"--weights {path}")


def _whole(value: Any, low: int = 0) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _train_state_problem(state: Any) -> str | None:
    """What is wrong with a saved :class:`TrainState` dict, or None."""
    if not isinstance(state, Mapping):
        return f"is a {type(state).__name__}, not a mapping of progress counters"
    for name in ("epoch", "step_in_epoch", "global_step", "steps_per_epoch", "skipped_images"):
        if name in state and not _whole(state[name]):
            return f"{name} must be a whole number >= 0, got {shown(state[name])}"
    for name in ("best_fitness", "best_map", "best_epoch"):
        value = state.get(name)
        if value is not None and not (_whole(value) if name == "best_epoch" else _number(value)):
            return f"{name} must be {'a whole number >= 0' if name == 'best_epoch' else 'a number'} or None, " \
                   f"got {shown(value)}"
    for name in ("train_time_s", "run_time_s"):
        if name in state and not (_number(state[name]) and state[name] >= 0):
            return f"{name} must be a number >= 0, got {shown(state[name])}"
    steps, step = state.get("steps_per_epoch", 0), state.get("step_in_epoch", 0)
    if step and not step <= steps:
        return f"step_in_epoch {step} is beyond the epoch's steps_per_epoch {steps}"
    sums = state.get("sums", {})
    if not isinstance(sums, Mapping) or not all(isinstance(k, str) and _number(v) for k, v in sums.items()):
        return f"sums must map names to numbers, got {shown(sums)}"
    metrics = state.get("metrics", [])
    if not isinstance(metrics, list) or not all(isinstance(row, Mapping) and all(isinstance(k, str) for k in row)
                                                for row in metrics):
        return f"metrics must be a list of rows (mappings of column names), got {shown(metrics)}"
    return None


def _optimizer_problem(state: Any) -> str | None:
    """What is wrong with the structure of a saved ``optimizer.state_dict()``, or None."""
    if not isinstance(state, Mapping) or not isinstance(state.get("state"), Mapping) \
            or not isinstance(state.get("param_groups"), list) or not state["param_groups"]:
        return "is not an optimizer state (a mapping with 'state' and a list of 'param_groups')"
    indices: list[Any] = []
    for number, group in enumerate(state["param_groups"]):
        if not isinstance(group, Mapping) or not isinstance(group.get("params"), list):
            return f"param group {number} is not a mapping with a list of 'params'"
        indices += group["params"]
        for key, value in group.items():
            if key not in ("params", "param_names", "name") and not (
                    value is None or isinstance(value, (bool, int, float))
                    or (isinstance(value, (list, tuple)) and all(_number(v) for v in value))):
                return f"param group {number} has {key} = {shown(value)}, not a number"
    if not all(_whole(i) for i in indices) or len(set(indices)) != len(indices):
        return "lists parameter indices that are not distinct whole numbers"
    known = set(indices)
    for index, entry in state["state"].items():
        if index not in known:
            return f"has a state for parameter {shown(index)}, which no param group lists"
        if not isinstance(entry, Mapping) or not all(
                isinstance(v, torch.Tensor) or _number(v) for v in entry.values()):
            return f"state of parameter {shown(index)} is not a mapping of tensors and numbers"
    return None


def _rng_problem(rngs: Any) -> str | None:
    """What keeps ``rngs`` (saved :func:`rng_states`, one per rank) from being restored, or None;
    each state is tried on a scratch generator, so nothing global changes."""
    if not isinstance(rngs, list):
        return f"is a {type(rngs).__name__}, not a list of per-process RNG states"
    for rank, state in enumerate(rngs):
        try:
            if not isinstance(state, Mapping):
                raise TypeError(f"a {type(state).__name__}")
            torch.Generator().set_state(state["torch"])
            cuda = state.get("cuda")
            if cuda is not None and not (isinstance(cuda, list) and all(
                    isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in cuda)):
                raise TypeError("cuda is not a list of byte tensors")
            kind, keys, pos, has_gauss, cached = state["numpy"]
            np.random.RandomState().set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
            version, internal, gauss = state["random"]
            random.Random().setstate((version, tuple(internal), gauss))
        except Exception as error:  # any malformed part: the state cannot be restored
            return f"RNG state of process {rank} cannot be restored ({type(error).__name__}: " \
                   f"{shown(str(error).splitlines()[0] if str(error) else '')})"
    return None


SCALER_KEYS = ("scale", "growth_factor", "backoff_factor", "growth_interval", "_growth_tracker")


def check_training_state(obj: Mapping[str, Any], path: str | Path) -> None:
    """Check every part of a ``last.pt`` that resuming restores, before anything is restored:
    ``model`` and ``ema`` (state dicts of the same tensors), ``ema_updates``, ``optimizer``,
    ``scaler``, ``train_state``, ``rng`` and ``run_config`` (a mapping; its values are checked by
    :func:`resume_run_config`). Whether the weights and optimizer state fit the model is checked
    when they are loaded (:func:`effdet.weights.checkpoint.load_weights`, :func:`load_resume_optimizer`).

    Raises:
        CheckpointError: one line naming the file, the part and what is wrong.
    """
    for part in ("model", "ema"):
        if part == "model" or obj.get(part) is not None:
            problem = state_dict_problem(obj.get(part))
            if problem:
                _resume_error(path, part, problem)
    ema, model = obj.get("ema"), obj["model"]
    if ema is not None:
        differ = [k for k in set(model) | set(ema)
                  if k not in model or k not in ema or tuple(model[k].shape) != tuple(ema[k].shape)]
        if differ:
            _resume_error(path, "ema", f"weights do not match the model's ({len(differ)} tensors differ, "
                                       f"e.g. {shown(sorted(differ)[0])})")
    if "ema_updates" in obj and not _whole(obj["ema_updates"]):
        _resume_error(path, "ema_updates", f"must be a whole number >= 0, got {shown(obj['ema_updates'])}")
    for part, problem in (("optimizer", _optimizer_problem(obj["optimizer"])),
                          ("train_state", _train_state_problem(obj["train_state"])),
                          ("rng", _rng_problem(obj.get("rng") or []))):
        if problem:
            _resume_error(path, part, problem)
    scaler = obj.get("scaler")
    if scaler is not None and not (isinstance(scaler, Mapping) and (not scaler or all(
            k in scaler and (_number(scaler[k]) or (isinstance(scaler[k], torch.Tensor) and scaler[k].numel() == 1))
            for k in SCALER_KEYS))):
        _resume_error(path, "scaler", f"is not a GradScaler state (numbers {', '.join(SCALER_KEYS)}), "
                                      f"got {shown(scaler)}")
    if not isinstance(obj["run_config"], Mapping):
        _resume_error(path, "run_config", f"is a {type(obj['run_config']).__name__}, not a mapping of the run's "
                                          "model:, data: and train: settings")


def load_resume_optimizer(optimizer: torch.optim.Optimizer, state: Mapping[str, Any], model: nn.Module,
                          path: str | Path) -> None:
    """Load a ``last.pt``'s optimizer state (:func:`effdet.engine.optim.load_optimizer_state`) and
    check that it fits: the same parameter groups and counts, the settings of this optimizer
    (an SGD state does not fit AdamW), and per-parameter tensors of each parameter's shape.

    Raises:
        CheckpointError: naming the file and what does not fit (the run then stops, having
            written nothing).
    """
    before = [dict(group) for group in optimizer.param_groups]
    try:
        load_optimizer_state(optimizer, dict(state), model)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as error:
        _resume_error(path, "optimizer", f"state does not fit this run's optimizer "
                                         f"({shown((str(error).splitlines() or [''])[0])})")
    for number, (old, new) in enumerate(zip(before, optimizer.param_groups)):
        for key, value in old.items():
            if key in ("params", "param_names", "lr"):
                continue
            saved = new.get(key, _MISSING)
            if saved is _MISSING:
                _resume_error(path, "optimizer", f"state was saved by another optimizer (param group {number} has "
                                                 f"no {key}); resume with the run's own train.optimizer")
            if "none" not in (_kind(saved), _kind(value)) and _kind(saved) != _kind(value):
                _resume_error(path, "optimizer", f"param group {number} has {key} = {shown(saved)}, "
                                                 f"where this optimizer has {shown(value)}")
    for group in optimizer.param_groups:
        for param in group["params"]:
            for key, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape != param.shape:
                    _resume_error(path, "optimizer", f"state {key} has shape {tuple(value.shape)} for a parameter "
                                                     f"of shape {tuple(param.shape)}")


_MISSING = object()


def _kind(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return f"sequence of {len(value)}"
    return type(value).__name__


def write_metrics_csv(rows: list[dict[str, Any]], path: str | Path,
                      columns: Sequence[str] = METRIC_COLUMNS) -> Path:
    """Write the per-epoch metrics rows to ``path`` atomically: the ``columns``
    (:func:`metric_columns`), then every other column a row has (detection: ``ap_<class>``) in the
    order first seen; a missing or None value is a blank."""
    path = Path(path)
    buf = io.StringIO()
    extra = list(dict.fromkeys(k for row in rows for k in row if k not in columns))
    columns = [*columns, *extra]
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else _fmt(row[k])) for k in columns})
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(buf.getvalue())
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def last_checkpoint_parts(model: nn.Module, ema: Any, optimizer: torch.optim.Optimizer,
                          scaler: torch.amp.GradScaler, state: TrainState, rngs: list[dict[str, Any]] | None
                          ) -> dict[str, Any]:
    """What ``last.pt`` holds besides the task's weights and metadata (see the module docstring):
    the raw weights are the task's ``model`` argument; these are the keyword arguments
    (``ema``, ``ema_updates``, ``optimizer``, ``scaler``, ``train_state``, ``rng``)."""
    averaged = ema.state_dict() if ema is not None else None
    return dict(ema=averaged["module"] if averaged else None, ema_updates=averaged["num_updates"] if averaged else 0,
                optimizer=optimizer.state_dict(), scaler=scaler.state_dict() if scaler.is_enabled() else None,
                train_state=state.to_dict(), rng=rngs)


def restore_training(path: Path, model: nn.Module, ema: Any, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, steps_per_epoch: int, rank: int, world_size: int,
                     log: Callable[[str], None]) -> TrainState:
    """Load a ``last.pt`` into the run's parts (checked first, :func:`read_training_checkpoint`):
    weights, EMA, optimizer, scaler and this process's RNG states, and return its progress. When an
    epoch now has another number of steps (batch size, process count or data changed), the run
    resumes at the same fraction of the epoch, with a notice.

    Raises:
        CheckpointError: the file or a part of it does not fit this run (nothing is trained).
    """
    ckpt = read_training_checkpoint(path)
    load_weights(model, ckpt["model"], source=str(path))
    if ema is not None and ckpt.get("ema") is not None:
        ema.load_state_dict({"module": ckpt["ema"], "num_updates": ckpt.get("ema_updates", 0)})
    load_resume_optimizer(optimizer, ckpt["optimizer"], model, path)
    if ckpt.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(ckpt["scaler"])
    state = TrainState.from_dict(ckpt["train_state"])
    if state.steps_per_epoch != steps_per_epoch and state.step_in_epoch:
        log(f"Notice: an epoch now has {steps_per_epoch} steps (was {state.steps_per_epoch}: the batch size, "
            "process count or data changed); resuming at the same fraction of the epoch.")
        state.step_in_epoch = min(steps_per_epoch - 1,
                                  round(state.step_in_epoch * steps_per_epoch / state.steps_per_epoch))
    state.steps_per_epoch = steps_per_epoch
    state.global_step = state.epoch * steps_per_epoch + state.step_in_epoch
    rngs = ckpt.get("rng") or []
    if rngs:
        set_rng_states(rngs[rank] if len(rngs) == world_size else rngs[0])
    log(f"Resumed from {path}: epoch {state.epoch + 1}, step {state.step_in_epoch}/{steps_per_epoch} "
        f"(global step {state.global_step}).")
    return state


__all__ = ["TrainState", "METRIC_COLUMNS", "metric_columns", "last_checkpoint_parts", "restore_training", "PER_CLASS_PREFIX", "rng_states", "set_rng_states", "resume_path", "check_training_state",
           "load_resume_optimizer", "read_training_checkpoint", "resume_run_config", "write_metrics_csv"]
