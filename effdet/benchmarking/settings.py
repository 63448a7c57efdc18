"""The settings of one benchmark run, checked once; no PyTorch, so the command line reads them for its flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from effdet.config import PostprocessSettings

TASKS: tuple[str, ...] = ("forward", "throughput", "predict", "train", "onnx", "runtimes")
"""What a run can measure, in the order it measures them (``onnx`` and ``runtimes`` on the CPU only)."""

AMP_NAMES: tuple[str, ...] = ("bf16", "fp16")
"""Autocast dtypes a run may time under (``amp``)."""

POSTPROCESS = PostprocessSettings(score_threshold=0.0, max_candidates=5000, max_detections=100)
"""The benchmark's post-processing: no score threshold, as the reference port has none; the
reference's 5000 candidates and 100 detections."""


class BenchmarkError(ValueError):
    """A benchmark that cannot run as asked (an unknown task, no reference-port harness, ...); the
    message says what to change."""


def parse_tasks(text: str) -> tuple[str, ...]:
    """``"forward,predict"`` -> ``("forward", "predict")``. Raises :class:`BenchmarkError` naming
    unknown tasks and the known ones."""
    tasks = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise BenchmarkError(f"unknown task(s) {unknown or [text]}; choose from {','.join(TASKS)}")
    return tasks


@dataclass(frozen=True)
class BenchmarkSettings:
    """What one run of :func:`effdet.benchmarking.suite.run_benchmark` measures, and how.

    Attributes:
        model: variant name or YAML config. weights: a checkpoint to load (default: random weights,
            seeded by ``seed``). overrides: model config ``key=value`` settings (``image_size``,
            ``num_classes``, ...).
        device: ``cpu``, ``cuda``, ``cuda:N``. threads: intra-op threads of ONNX Runtime, OpenVINO and
            the reference port (None: PyTorch's current count).
        tasks: a subset of :data:`TASKS`. batch_size: the throughput batch (None: 8 on the CPU, 32 on
            CUDA). train_batch_size: the training step's batch (None: 4 on the CPU, 32 on CUDA).
        amp: autocast dtype (``bf16``, ``fp16``) or None.
        runs: timed runs per variant and task (train_runs: per training variant, None: ``runs``),
            alternating in ``rounds`` rounds after ``warmup`` untimed runs.
        images: image files or folders of the end-to-end figure (empty: 4 synthetic JPEGs).
        postprocess: the post-processing of every variant (:data:`POSTPROCESS` by default).
        compile: also time ``torch.compile`` of the fused network. eager: also time the plain network.
        train_channels_last: the timed training step runs in ``channels_last``.
        seed: seed of random weights and inputs. work_dir: folder for inputs and exported files
            (None: a temporary one). report_file: the report is rewritten there after every task.
        command_line: recorded in the report.

    Raises:
        BenchmarkError: an unknown task or autocast dtype, or a count out of range.
    """

    model: str = "efficientdet_d0"
    weights: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    threads: int | None = None
    tasks: tuple[str, ...] = TASKS
    batch_size: int | None = None
    train_batch_size: int | None = None
    amp: str | None = None
    runs: int = 6
    train_runs: int | None = None
    rounds: int = 3
    warmup: int = 2
    images: tuple[str, ...] = ()
    postprocess: PostprocessSettings = POSTPROCESS
    compile: bool = False
    eager: bool = True
    train_channels_last: bool = True
    seed: int = 0
    work_dir: str | None = None
    report_file: str | None = None
    command_line: str | None = None

    def __post_init__(self) -> None:
        parse_tasks(",".join(self.tasks))
        if self.amp is not None and self.amp not in AMP_NAMES:
            raise BenchmarkError(f"amp must be one of {', '.join(AMP_NAMES)} or None, got {self.amp!r}")
        counts = dict(runs=self.runs, rounds=self.rounds, batch_size=self.batch_size,
                      train_batch_size=self.train_batch_size, train_runs=self.train_runs, threads=self.threads)
        low = [f"{name} {value}" for name, value in counts.items() if value is not None and value < 1]
        if low or self.warmup < 0:
            raise BenchmarkError(f"benchmark counts must be at least 1 (warmup at least 0), got "
                                 f"{', '.join(low + ([f'warmup {self.warmup}'] if self.warmup < 0 else []))}")


__all__ = ["AMP_NAMES", "POSTPROCESS", "TASKS", "BenchmarkError", "BenchmarkSettings", "parse_tasks"]
