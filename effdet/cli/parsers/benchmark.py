"""``effdet benchmark``'s flags. The counts (``--runs``, ``--rounds``, ``--warmup``, ...) only parse here:
:class:`effdet.benchmarking.settings.BenchmarkSettings` checks them, once, and its error names the flag."""

from __future__ import annotations

import argparse

from effdet.benchmarking.settings import AMP_NAMES, POSTPROCESS, TASKS, BenchmarkError, parse_tasks
from effdet.cli.parsers import (
    POSITIVE, add_batch_size_argument, add_device_argument, add_image_size_argument, add_postprocess_arguments,
    add_threads_argument, integer,
)

DESCRIPTION = """Measure EfficientDet speed, optionally side by side with the reference port.

    effdet benchmark --model efficientdet_d0 --threads 2
    effdet benchmark --model efficientdet_d0 --threads 2 --compare-reference --json bench.json
    effdet benchmark --model efficientdet_d3 --device cuda --amp bf16 --batch-size 32

Figures (medians of timed runs; warm-up runs excluded):
  forward      network forward in eval mode, batch 1 (latency) and batch --batch-size (throughput)
  predict      end to end on JPEG files, one image at a time: decode, letterbox, forward, box
               decoding, NMS (per image)
  train        one training step at --train-batch-size: forward, anchor labelling, loss, backward,
               SGD step (images/s); stochastic depth off so that the loss is deterministic
  onnx         the exported ONNX model under ONNX Runtime, batch 1 (CPU)
  runtimes     the fused network exported alone, batch 1 (CPU): ONNX Runtime fp32, OpenVINO fp32 and
               OpenVINO int8 (NNCF, calibrated on --images or the synthetic JPEGs), alternating with
               our PyTorch forward and the reference's in the same rounds (needs the export extra)
plus peak memory of each, from one extra untimed call after freed heap memory is returned to the OS
(resident-set growth on CPU, torch.cuda.max_memory_allocated on CUDA), so timed runs pay no page faults
of a trimmed heap.
"ours" is the optimised path (effdet.inference.predictor.optimize_for_inference / Predictor(optimize=True);
for training: channels_last memory format, see --no-train-channels-last); "eager" the plain model
(training: default memory format, effdet train's train.channels_last=false); "compiled" (--compile): torch.compile of the
optimised network. "ratio" compares median wall-clock times; "best" the fastest runs; "cpu" the
median process CPU times (all threads); the last two are less sensitive to a busy machine.

--compare-reference runs the reference port (PyPI effdet 0.4.1) in a separate process, through the
reference-port harness refport/ of a source checkout of this project (not part of the installed
package: run the benchmark from the checkout's root folder, or with the checkout on PYTHONPATH),
with the same random weights (exported by the reference and imported into ours), the same inputs and the
same post-processing settings. Timed runs of ours and the reference alternate in --rounds rounds,
so that a busy machine slows both alike; every figure is printed with its ratio ours / reference,
and the detections and training losses of both are compared.

This process keeps freed memory for reuse (effdet.runtime.keep_freed_memory, as effdet train,
predict and val do; EFFDET_KEEP_FREED_MEMORY=0 turns it off), which spares ours and "eager"
the page faults of re-mapping activations; the reference runs with the C library's defaults, as
its own tools do, unless --reference-keep-freed-memory gives it the same setting (through glibc's
MALLOC_MMAP_MAX_ / MALLOC_TRIM_THRESHOLD_ environment variables).

--threads sets the threads of ONNX Runtime, OpenVINO and the reference too.
"""


def _tasks(text: str) -> tuple[str, ...]:
    try:
        return parse_tasks(text)
    except BenchmarkError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="variant name or YAML config (default efficientdet_d0)")
    p.add_argument("--weights", "--checkpoint", dest="weights",
                   help="weights to load (this project's checkpoint or a reference-port state dict); "
                        "default: random weights")
    add_image_size_argument(p)
    p.add_argument("--num-classes", type=POSITIVE, default=None, help="classes (default: the config's, 90)")
    add_device_argument(p)
    add_threads_argument(p)
    add_batch_size_argument(p, None, "throughput batch", unset="8 on CPU, 32 on CUDA")
    p.add_argument("--train-batch-size", type=integer, default=None,
                   help="training batch (default 4 on CPU, 32 on CUDA)")
    p.add_argument("--amp", choices=AMP_NAMES, default=None, help="autocast dtype (CUDA)")
    p.add_argument("--tasks", type=_tasks, default=",".join(TASKS), help=f"comma-separated subset of {','.join(TASKS)}")
    p.add_argument("--runs", type=integer, default=6, help="timed runs per variant and task (default 6)")
    p.add_argument("--train-runs", type=integer, default=None,
                   help="timed training steps per variant (default: --runs)")
    p.add_argument("--rounds", type=integer, default=3, help="alternate the variants in this many rounds (default 3)")
    p.add_argument("--warmup", type=integer, default=2, help="untimed runs first (default 2)")
    p.add_argument("--images", nargs="+", help="image files / folders for the end-to-end figure "
                                               "(default: 4 synthetic JPEGs of COCO-like sizes)")
    add_postprocess_arguments(p, POSTPROCESS, soft_nms=False, why=": the reference port has no threshold")
    p.add_argument("--compile", action="store_true", help="also time torch.compile of the optimised network "
                                                          "(reports the compile time)")
    p.add_argument("--no-eager", action="store_true", help="skip the unoptimised (eager) variant")
    p.add_argument("--train-channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="train in channels_last memory format (default on)")
    p.add_argument("--compare-reference", action="store_true",
                   help="also measure the reference port (PyPI effdet 0.4.1) side by side; needs the source "
                        "checkout's refport/ harness (run from the checkout's root)")
    p.add_argument("--reference-keep-freed-memory", action="store_true",
                   help="run the reference with the same malloc setting as ours (freed memory kept for reuse)")
    p.add_argument("--seed", type=integer, default=0, help="seed of the random weights and inputs")
    p.add_argument("--work-dir", help="folder for inputs and exported files (default: a temporary folder)")
    p.add_argument("--json", help="write all figures to this JSON file")
    p.add_argument("overrides", nargs="*", help="model config key=value overrides")
