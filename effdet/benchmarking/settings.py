"""The settings of one benchmark run, checked once; no PyTorch, so the command line reads them for its flags."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from effdet.config import ConfigError, PostprocessSettings

TASKS: tuple[str, ...] = ("forward", "throughput", "predict", "train", "onnx", "runtimes")
"""What a run can measure, in the order it measures them (``onnx`` and ``runtimes`` on the CPU only)."""

AMP_NAMES: tuple[str, ...] = ("bf16", "fp16")
"""Autocast dtypes a run may time under (``amp``)."""

POSTPROCESS = PostprocessSettings(score_threshold=0.0, max_candidates=5000, max_detections=100)
"""The benchmark's post-processing: no score threshold, as the reference port has none; the
reference's 5000 candidates and 100 detections."""


COUNTS: dict[str, int] = {"runs": 1, "rounds": 1, "warmup": 0, "train_runs": 1, "batch_size": 1,
                          "train_batch_size": 1, "threads": 1, "seed": 0}
"""The counts of :class:`BenchmarkSettings` and the least value of each (None: the default, where allowed)."""


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
        BenchmarkError: an unknown task or autocast dtype.
        ConfigError: a count below its least value (:data:`COUNTS`), naming the field.
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
        for name, least in COUNTS.items():
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
                raise ConfigError(f"benchmark {name} must be an integer of at least {least}, got {value!r}",
                                  field=name, reason=f"must be an integer of at least {least}", example=str(least))


__all__ = ["AMP_NAMES", "COUNTS", "POSTPROCESS", "TASKS", "BenchmarkError", "BenchmarkSettings", "parse_tasks"]
