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
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effdet.fileio import atomic_write
from effdet.weights.checkpoint import CheckpointError, read_checkpoint
from effdet.engine.train_config import RunConfig, load_run_config

METRIC_COLUMNS = ("epoch", "step", "loss", "class_loss", "box_loss", "lr", "map", "map50", "images",
                  "skipped_images", "images_per_s", "time_s")


@dataclass
class TrainState:
    """Progress counters of a run; saved in ``last.pt`` and restored on resume.

    ``epoch`` is the 0-based epoch in progress (or next to start) and ``step_in_epoch`` the
    number of its batches already trained on. ``sums`` accumulates this epoch's loss totals
    (``loss``, ``class_loss``, ``box_loss``, ``steps``, ``images``, ``skipped``) for its metrics row.
    """

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    steps_per_epoch: int = 0
    best_map: float | None = None
    best_epoch: int | None = None
    train_time_s: float = 0.0
    skipped_images: int = 0
    sums: dict[str, float] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainState":
        names = {f.name for f in dataclasses.fields(cls)}
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
    """Read ``last.pt`` for resuming; refuses files without training state, saying what to do."""
    obj = read_checkpoint(path)
    missing = [k for k in ("train_state", "optimizer", "run_config") if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is not a resumable training checkpoint (it has no {', '.join(missing)}). "
                              "Resume from the run's last.pt, or start a new run from its weights with --weights.")
    return obj


def resume_run_config(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """The run config stored in a ``last.pt``, with ``key=value`` overrides (e.g. more epochs) applied."""
    return load_run_config(read_training_checkpoint(path)["run_config"], overrides)


def write_metrics_csv(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write the per-epoch metrics rows (columns ``METRIC_COLUMNS``) to ``path`` atomically."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else _fmt(row[k])) for k in METRIC_COLUMNS})
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(buf.getvalue())
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


__all__ = ["TrainState", "METRIC_COLUMNS", "rng_states", "set_rng_states", "resume_path",
           "read_training_checkpoint", "resume_run_config", "write_metrics_csv"]
