"""The reference port's side of ``effdet benchmark --compare-reference``: a
:class:`effdet.benchmarking.suite.Reference` that runs the reference in a long-lived subprocess.

``effdet benchmark`` finds this module in the source checkout (importable as ``refport.bench``
from the checkout's root or with the checkout on ``PYTHONPATH``); the installed package never
looks into the checkout itself. The reference (PyPI ``effdet`` 0.4.1) is installed on first use
by :mod:`refport.env` into its own folder and runs ``bench_worker.py`` (next to this file) with
that folder first on ``PYTHONPATH``; the two processes talk in JSON lines, so that timed runs of
ours and the reference's alternate within one measurement.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

from effdet.benchmarking.settings import BenchmarkError
from effdet.config import EfficientDetConfig, PostprocessSettings
from effdet.runtime import GLIBC_KEEP_FREED_MEMORY_ENV
from effdet.weights.reference import REFERENCE_MODELS
from refport import env

WORKER = Path(__file__).resolve().with_name("bench_worker.py")
"""The reference's side of the protocol (runs with the reference port as ``effdet``)."""

REFERENCE_NMS_IOU = 0.5
"""The reference's NMS IoU threshold, fixed in its post-processing."""


def reference_name(model: str) -> str:
    """The reference's name of ``model`` (ours or its own). Raises :class:`BenchmarkError` for a variant
    the reference does not have."""
    inverse = {ours: ref for ref, ours in REFERENCE_MODELS.items()}
    if model in inverse:  # our variant names first: "efficientdet_d0" is ours (TF padding) = tf_efficientdet_d0
        return inverse[model]
    if model in REFERENCE_MODELS:
        return model
    raise BenchmarkError(f"--compare-reference needs a variant the reference port has ({', '.join(inverse)}), "
                         f"got {model!r}")


class ReferenceWorker:
    """The reference port in a long-lived subprocess (``bench_worker.py``), JSON lines both ways."""

    def __init__(self, reference_dir: Path, threads: int | None, log: Path, keep_freed_memory: bool = False) -> None:
        environ = os.environ.copy()
        if keep_freed_memory:  # what effdet.runtime.keep_freed_memory sets, through glibc's environment
            environ.update(GLIBC_KEEP_FREED_MEMORY_ENV)
        environ["PYTHONPATH"] = os.pathsep.join([str(reference_dir)] + ([environ["PYTHONPATH"]]
                                                                        if environ.get("PYTHONPATH") else []))
        if threads:
            environ["OMP_NUM_THREADS"] = str(threads)
        self.log_path = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, env=environ, cwd=str(log.parent))

    def call(self, cmd: str, **kwargs: Any) -> dict[str, Any]:
        """Send one command, return its result. Raises RuntimeError when the worker exited or failed."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **kwargs}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the reference worker exited (rc={self.proc.wait()}); see its log {self.log_path}")
        reply = json.loads(line)
        if not reply["ok"]:
            raise RuntimeError(f"reference worker command {cmd!r} failed: {reply['error']}\n{reply['traceback']}")
        return reply["result"]

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")  # type: ignore[union-attr]
                self.proc.stdin.flush()  # type: ignore[union-attr]
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
        self._log.close()


class ReferenceRunner:
    """A task of the reference port, prepared (and warmed up) in the worker: a
    :class:`effdet.benchmarking.measure.Runner`."""

    def __init__(self, worker: ReferenceWorker, task: str, warmup: int, **kwargs: Any) -> None:
        self.worker = worker
        start = time.perf_counter()
        info = worker.call("prepare", task=task, warmup=warmup, **kwargs)
        self.warmup_s = time.perf_counter() - start
        self.items = info["items"]

    def run(self, runs: int) -> tuple[list[float], list[float], float | None, dict[str, Any]]:
        out = self.worker.call("run", runs=runs)
        return out["times"], out["cpu_times"], out["peak_mb"], {"losses": out["losses"]}


class ReferencePort:
    """The reference port as the benchmark's :class:`effdet.benchmarking.suite.Reference`.

    ``model``: our or the reference's variant name (None: efficientdet_d0). ``postprocess``: the
    benchmark's settings; the reference's NMS IoU is fixed at :data:`REFERENCE_NMS_IOU` and it has
    hard NMS only. ``keep_freed_memory``: run it with our malloc setting (glibc's environment).

    Raises:
        BenchmarkError: a variant or post-processing the reference does not have (at construction),
            or the reference port cannot be installed (:meth:`prepare`).
    """

    def __init__(self, model: str | None, postprocess: PostprocessSettings, keep_freed_memory: bool = False) -> None:
        self.name = reference_name(model or "efficientdet_d0")
        if postprocess.nms_iou != REFERENCE_NMS_IOU or postprocess.soft_nms:
            raise BenchmarkError(f"--compare-reference needs hard NMS at IoU {REFERENCE_NMS_IOU}, the reference's "
                                 f"fixed setting (got {'soft-NMS' if postprocess.soft_nms else postprocess.nms_iou})")
        self.keep_freed_memory = keep_freed_memory
        self.worker: ReferenceWorker | None = None
        self._dir: Path | None = None

    def _reference_dir(self) -> Path:
        if self._dir is None:
            print("Preparing the reference port (PyPI effdet 0.4.1, installed on first use) ...", flush=True)
            found = env.reference_dir()
            if found is None:
                raise BenchmarkError(f"the reference port is unavailable: {env.skip_reason()}")
            self._dir = found
        return self._dir

    def prepare(self, config: EfficientDetConfig, seed: int, work: Path) -> Path:
        self._reference_dir()
        weights = work / f"{self.name}_random.pt"
        print(f"Exporting random {self.name} weights from the reference to {weights} ...", flush=True)
        env.run_reference("export", model_name=self.name, out=weights, num_classes=config.num_classes,
                          image_size=list(config.image_size), seed=seed, probe=False)
        return weights

    def start(self, config: EfficientDetConfig, device: torch.device, threads: int | None,
              postprocess: PostprocessSettings, weights: Path, work: Path) -> dict[str, Any]:
        self.worker = ReferenceWorker(self._reference_dir(), threads, work / "reference_worker.log",
                                      keep_freed_memory=self.keep_freed_memory)
        return self.worker.call("init", threads=threads, device=str(device), model_name=self.name,
                                num_classes=config.num_classes, image_size=list(config.image_size),
                                weights=str(weights), max_detection_points=postprocess.max_candidates,
                                max_det_per_image=postprocess.max_detections)

    def _started(self) -> ReferenceWorker:
        if self.worker is None:
            raise RuntimeError("the reference port was not started (ReferencePort.start)")
        return self.worker

    def runner(self, task: str, warmup: int, **inputs: Any) -> ReferenceRunner:
        return ReferenceRunner(self._started(), task, warmup, **inputs)

    def detections(self, path: Path) -> list[dict[str, torch.Tensor]]:
        self._started().call("detections", out=str(path))
        return torch.load(path, weights_only=True)

    def close(self) -> None:
        if self.worker is not None:
            self.worker.close()
            self.worker = None


__all__ = ["REFERENCE_NMS_IOU", "WORKER", "ReferencePort", "ReferenceRunner", "ReferenceWorker", "reference_name"]
