"""Speed measurement: timed runs, peak memory, benchmark inputs and the four measured tasks.

The tasks are callables that do one unit of work per call, so that ``tools/benchmark.py`` can
time them (and the reference port's equivalents) interleaved in rounds:

* :class:`ForwardTask`: one network forward in eval mode (``inference_mode``) on a fixed batch;
* :class:`PredictTask`: end to end on JPEG files, one image at a time: decode, letterbox,
  normalise, forward, decode boxes, NMS;
* :class:`TrainStepTask`: one training step: forward, anchor labelling, loss, backward, SGD step.

Times are wall-clock seconds per call (the device is synchronised around each call); peak
memory is the resident-set high-water mark above the level before the runs on CPU (Linux), or
``torch.cuda.max_memory_allocated`` on CUDA.
"""

from __future__ import annotations

import contextlib
import dataclasses
import ctypes
import resource
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from effdet.data.images import read_image
from effdet.data.synthetic import draw_image
from effdet.engine.step import build_train_step
from effdet.engine.train_config import TrainConfig
from effdet.modeling.efficientdet import EfficientDet
from effdet.inference.predictor import Predictor

AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ------------------------------------------------------------------------------------------------
# timing and memory
# ------------------------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Measurement:
    """Timed runs of one task: ``times`` wall-clock and ``cpu_times`` process CPU seconds per
    call, ``items`` images per call."""

    times: list[float] = field(default_factory=list)
    items: int = 1
    peak_memory_mb: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    cpu_times: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times)

    def summary(self) -> dict[str, Any]:
        """Plain-data summary: median / min ms per call and per image, images per second."""
        med = self.median_s
        cpu = statistics.median(self.cpu_times) * 1e3 if self.cpu_times else None
        return {"runs": len(self.times), "items_per_run": self.items,
                "median_ms": med * 1e3, "min_ms": min(self.times) * 1e3,
                "median_ms_per_image": med * 1e3 / self.items, "images_per_s": self.items / med,
                "median_cpu_ms": cpu, "peak_memory_mb": self.peak_memory_mb,
                "times_ms": [t * 1e3 for t in self.times], **self.extra}


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _hwm_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _release_free_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so RSS shows live memory only."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _reset_hwm() -> bool:
    """Reset the process's RSS high-water mark (Linux ``clear_refs`` 5); False where impossible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float | None]]:
    """Measure peak memory of the enclosed work; the yielded dict gets ``peak_mb`` on exit.

    CUDA: ``torch.cuda.max_memory_allocated`` (weights, activations, workspace) in MiB.
    CPU: resident-set high-water mark minus the resident set before, in MiB (None when the
    high-water mark cannot be reset, i.e. not on Linux).
    """
    out: dict[str, float | None] = {"peak_mb": None}
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        yield out
        synchronize(device)
        out["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        return
    _release_free_memory()
    resettable = _reset_hwm()
    before = _rss_mb()
    yield out
    after = _hwm_mb()
    if resettable and before is not None and after is not None:
        out["peak_mb"] = max(0.0, after - before)


def time_calls(fn: Callable[[], Any], runs: int, device: torch.device,
               cpu_times: list[float] | None = None) -> list[float]:
    """Wall-clock seconds of ``runs`` calls of ``fn``, each between device synchronisations.

    ``cpu_times``, when given, receives the process CPU seconds (all threads) of each call.
    """
    times = []
    for _ in range(runs):
        synchronize(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
        if cpu_times is not None:
            cpu_times.append(time.process_time() - cpu_start)
    return times


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------

def make_jpegs(folder: str | Path, sizes: list[tuple[int, int]], seed: int = 0, quality: int = 90) -> list[Path]:
    """Write one synthetic JPEG per (H, W) in ``sizes`` (shapes on varied backgrounds); returns paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, size in enumerate(sizes):
        image, _ = draw_image(rng, size)
        path = folder / f"bench_{i:02d}_{size[0]}x{size[1]}.jpg"
        Image.fromarray(image).save(path, quality=quality)
        paths.append(path)
    return paths


def make_train_batch(batch_size: int, image_size: tuple[int, int], num_classes: int, seed: int = 0
                     ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """A training batch of synthetic images already at the network input size.

    Returns (uint8 B x 3 x H x W images, per image (N_i, 4) float32 xyxy boxes in input pixels,
    per image (N_i,) int64 labels in 0..num_classes-1); every image has at least one object.
    """
    rng = np.random.default_rng(seed)
    images, boxes, labels = [], [], []
    while len(images) < batch_size:
        image, objects = draw_image(rng, image_size)
        if not objects:
            continue
        images.append(torch.from_numpy(image).permute(2, 0, 1))
        boxes.append(torch.tensor([obj[1] for obj in objects], dtype=torch.float32))
        labels.append(torch.tensor([(obj[0] * 7) % num_classes for obj in objects], dtype=torch.int64))
    return torch.stack(images), boxes, labels


def random_input(batch_size: int, image_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """A seeded N(0, 1) float32 B x 3 x H x W batch (a normalised image stand-in)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch_size, 3, *image_size, generator=g)


def autocast(device: torch.device, amp: str | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` in (None, "bf16", "fp16")."""
    if amp is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AMP_DTYPES[amp])


# ------------------------------------------------------------------------------------------------
# tasks
# ------------------------------------------------------------------------------------------------

class ForwardTask:
    """One eval-mode forward of ``model`` on a fixed float batch (N x 3 x H x W) per call."""

    def __init__(self, model: torch.nn.Module, batch: torch.Tensor, device: torch.device,
                 amp: str | None = None) -> None:
        self.model = model.to(device).eval()
        self.batch = batch.to(device)
        self.device = device
        self.amp = amp
        self.items = batch.shape[0]

    def __call__(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        with torch.inference_mode(), autocast(self.device, self.amp):
            return self.model(self.batch)


class PredictTask:
    """End to end, one image at a time: per call every file is decoded and run through ``predictor``.

    ``items`` is the number of files; the last call's detections are kept in ``detections``.
    """

    def __init__(self, predictor: Predictor, paths: list[Path], amp: str | None = None) -> None:
        self.predictor = predictor
        self.paths = list(paths)
        self.items = len(self.paths)
        self.amp = amp
        self.detections: list[dict[str, Any]] = []

    def __call__(self) -> list[dict[str, Any]]:
        out = []
        with autocast(self.predictor.device, self.amp):
            for path in self.paths:
                out.append(self.predictor(read_image(path)))
        self.detections = out
        return out


class TrainStepTask:
    """One training step per call on a fixed batch: ``effdet train``'s own step
    (:class:`effdet.engine.step.TrainStep`: the recipe's optimizer and parameter groups, gradient
    clipping, EMA update and ``channels_last``), at a fixed ``lr``.

    ``model`` is trained in place. ``recipe`` defaults to the official COCO recipe (SGD momentum
    0.9, weight decay 4e-5 on >= 2-D weights only, clipping at norm 10, EMA 0.9998 with warm-up);
    ``losses`` records the loss of every call.
    """

    def __init__(self, model: EfficientDet, images: torch.Tensor, boxes: list[torch.Tensor],
                 labels: list[torch.Tensor], device: torch.device, lr: float = 1e-4, amp: str | None = None,
                 channels_last: bool = False, recipe: TrainConfig | None = None) -> None:
        train = dataclasses.replace(recipe or TrainConfig(), channels_last=channels_last)
        self.model = model.to(device)
        self.step = build_train_step(self.model, train, lr, tuple(images.shape[-2:]), AMP_DTYPES.get(amp))
        self.images = images.to(device)
        self.targets = [{"boxes": b.to(device), "labels": lab.to(device)} for b, lab in zip(boxes, labels)]
        self.lr = lr
        self.items = images.shape[0]
        self.losses: list[float] = []

    def __call__(self) -> float:
        values, problem = self.step(self.images, self.targets, self.lr)
        if problem is not None:
            raise RuntimeError(f"benchmark training step: the {problem} is not finite ({values})")
        self.losses.append(values[0])
        return values[0]


def measure(task: Callable[[], Any], runs: int, device: torch.device, items: int) -> Measurement:
    """Time ``runs`` calls of ``task`` and record their peak memory."""
    with peak_memory(device) as mem:
        times = time_calls(task, runs, device)
    return Measurement(times, items, mem["peak_mb"])


__all__ = ["AMP_DTYPES", "ForwardTask", "Measurement", "PredictTask", "TrainStepTask", "autocast", "make_jpegs",
           "make_train_batch", "measure", "peak_memory", "random_input", "synchronize", "time_calls"]
