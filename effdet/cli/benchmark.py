"""``effdet benchmark``: EfficientDet speed, optionally side by side with the reference port.

What is measured and how is the job's help text, :data:`effdet.cli.parsers.benchmark.DESCRIPTION`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import importlib

import torch

from effdet.cli.benchmarking import (ForwardTask, Measurement, PredictTask, TrainStepTask, make_jpegs,
                                     make_train_batch, peak_memory, random_input, time_calls)
from effdet.cli.common import apply_threads, check_device
from effdet.cli.parsers.benchmark import BENCHMARK_TASKS as TASKS
from effdet.config import PostprocessSettings, parse_overrides
from effdet.data.images import find_images
from effdet.data.results import write_json
from effdet.export.onnx import DetectionGraph, NetworkGraph, example_input, export_onnx
from effdet.export.openvino import calibration_images, export_openvino
from effdet.inference.backends import ExportedNetwork
from effdet.factory import create_model, load_model
from effdet.inference.predictor import Predictor, optimize_for_inference
from effdet.runtime import GLIBC_KEEP_FREED_MEMORY_ENV, freed_memory_kept
from effdet.weights.reference import REFERENCE_MODELS

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The source checkout this module lies in (editable install): --compare-reference needs its
refport/ harness and tools/refport_bench_worker.py."""
WORKER = REPO_ROOT / "tools" / "refport_bench_worker.py"
FIRST_LOSS_RTOL = 1e-4
"""Largest relative difference of the first training step's loss from the reference's: the same
weights and batch must give the same loss."""

TRAIN_LOSS_RTOL = 1e-2
"""Largest relative difference of any later timed step's loss: the same training trajectory. Later
steps drift slightly apart (seen: 1.1e-3 after 2 steps at 128 px, 1.9e-4 over 6 steps at 256 px):
the gradients are not bit-identical (for one, our box loss is masked by positive anchor, the
reference's by non-zero target component). (The tool reports figures and ratios, not targets: the
project's targets live in the README's measured tables.)"""

AMP_LOSS_RTOL = (1e-2, 5e-2)
"""(first step, any step) under --amp: bf16 keeps 8 bits of mantissa (relative rounding 3.9e-3), so
the two trainings' losses agree to about 1e-3 at the first step and drift further (seen on an H200
with bf16: first 7.7e-4 / 4.6e-4, worst of 10 steps 4.8e-3 / 1.3e-2 for D0 / D4)."""


# ------------------------------------------------------------------------------------------------
# runners: one variant of one task, timed in rounds
# ------------------------------------------------------------------------------------------------

class LocalRunner:
    """A task of ours in this process."""

    def __init__(self, task: Callable[[], Any], items: int, device: torch.device, warmup: int) -> None:
        self.task, self.items, self.device = task, items, device
        self.memory_measured = False
        start = time.perf_counter()
        for _ in range(warmup):
            task()
        self.warmup_s = time.perf_counter() - start

    def run(self, runs: int) -> tuple[list[float], list[float], float | None, dict[str, Any]]:
        peak = None
        if not self.memory_measured:  # one untimed call measures memory: it starts from a trimmed heap
            with peak_memory(self.device) as mem:
                self.task()
            peak, self.memory_measured = mem["peak_mb"], True
        cpu: list[float] = []
        times = time_calls(self.task, runs, self.device, cpu)
        return times, cpu, peak, {}


class ReferenceWorker:
    """The reference port in a long-lived subprocess (tools/refport_bench_worker.py), JSON lines."""

    def __init__(self, reference_dir: Path, threads: int | None, log: Path, keep_freed_memory: bool = False) -> None:
        env = os.environ.copy()
        if keep_freed_memory:  # what effdet.runtime.keep_freed_memory sets, through glibc's environment
            env.update(GLIBC_KEEP_FREED_MEMORY_ENV)
        env["PYTHONPATH"] = os.pathsep.join([str(reference_dir)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        self.log_path = log
        self._log = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, str(WORKER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, env=env, cwd=str(log.parent))

    def call(self, cmd: str, **kwargs: Any) -> dict[str, Any]:
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
    """A task of the reference port, prepared (and warmed up) in the worker."""

    def __init__(self, worker: ReferenceWorker, task: str, warmup: int, **kwargs: Any) -> None:
        self.worker = worker
        start = time.perf_counter()
        info = worker.call("prepare", task=task, warmup=warmup, **kwargs)
        self.warmup_s = time.perf_counter() - start
        self.items = info["items"]

    def run(self, runs: int) -> tuple[list[float], list[float], float | None, dict[str, Any]]:
        out = self.worker.call("run", runs=runs)
        return out["times"], out["cpu_times"], out["peak_mb"], {"losses": out["losses"]}


def interleave(runners: dict[str, Any], runs: int, rounds: int) -> dict[str, Measurement]:
    """Time every runner ``runs`` times, alternating between them in ``rounds`` rounds."""
    rounds = max(1, min(rounds, runs))
    per_round = [runs // rounds + (1 if r < runs % rounds else 0) for r in range(rounds)]
    results = {name: Measurement(items=r.items) for name, r in runners.items()}
    for n in per_round:
        for name, runner in runners.items():
            times, cpu_times, peak, extra = runner.run(n)
            m = results[name]
            m.times.extend(times)
            m.cpu_times.extend(cpu_times)
            if peak is not None:
                m.peak_memory_mb = max(m.peak_memory_mb or 0.0, peak)
            m.extra.update(extra)
    for name, runner in runners.items():
        results[name].extra["warmup_s"] = runner.warmup_s
    return results


# ------------------------------------------------------------------------------------------------
# comparisons
# ------------------------------------------------------------------------------------------------

def compare_detections(ours: list[dict[str, torch.Tensor]], theirs: list[dict[str, torch.Tensor]],
                       box_tol: float = 1e-2, score_tol: float = 1e-4, max_detections: int | None = None
                       ) -> dict[str, Any]:
    """Match detections one to one per image: same label, score within ``score_tol``, every box
    coordinate within ``box_tol`` pixels (the order of tied scores does not matter).

    When an image's list is full (``max_detections``), detections tied with its lowest score may
    differ (which of several equal candidates made the cut is arbitrary) and need no match.
    """
    unmatched, worst_box, worst_score, counts = 0, 0.0, 0.0, []
    for a, b in zip(ours, theirs):
        counts.append((len(a["scores"]), len(b["scores"])))
        sa, sb = a["scores"].detach().cpu().float(), b["scores"].detach().cpu().float()
        ba, bb = a["boxes"].detach().cpu().float(), b["boxes"].detach().cpu().float()
        la, lb = a["labels"].detach().cpu(), b["labels"].detach().cpu()
        used = torch.zeros(len(sb), dtype=torch.bool)
        full = max_detections is not None and len(sa) == max_detections
        cutoff = float(sa.min()) + score_tol if full and len(sa) else -1.0
        for j in range(len(sa)):
            ok = (~used) & (lb == la[j]) & ((sb - sa[j]).abs() <= score_tol)
            diffs = (bb - ba[j]).abs().amax(dim=1) if len(bb) else torch.zeros(0)
            ok &= diffs <= box_tol
            if bool(ok.any()):
                k = int(torch.where(ok, diffs, torch.full_like(diffs, float("inf"))).argmin())
                used[k] = True
                worst_box = max(worst_box, float(diffs[k]))
                worst_score = max(worst_score, float((sb[k] - sa[j]).abs()))
            elif float(sa[j]) > cutoff:
                unmatched += 1
    equal = len(ours) == len(theirs) and unmatched == 0 and all(x == y for x, y in counts)
    return {"equal": equal, "unmatched": unmatched, "counts": counts, "max_box_diff_px": worst_box,
            "max_score_diff": worst_score}


def max_output_diff(a: tuple[list[torch.Tensor], list[torch.Tensor]],
                    b: tuple[list[torch.Tensor], list[torch.Tensor]]) -> float:
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a[0] + a[1], b[0] + b[1]))


# ------------------------------------------------------------------------------------------------
# the benchmark
# ------------------------------------------------------------------------------------------------

def _refport() -> Any:
    """The source checkout's reference-port harness (``refport.env``), loaded on demand: it is
    not part of the installed package."""
    if not (REPO_ROOT / "refport" / "env.py").is_file() or not WORKER.is_file():
        raise SystemExit("error: --compare-reference needs a source checkout of this project (refport/env.py and "
                         f"tools/refport_bench_worker.py under {REPO_ROOT}); install it with pip install -e . "
                         "from a git clone")
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    return importlib.import_module("refport.env")


def _reference_dir() -> Path:
    env = _refport()
    print("Preparing the reference port (PyPI effdet 0.4.1, installed on first use) ...", flush=True)
    d = env.reference_dir()
    if d is None:
        raise SystemExit(f"error: the reference port is unavailable: {env.skip_reason()}")
    return d


def _reference_name(model: str) -> str:
    inverse = {ours: ref for ref, ours in REFERENCE_MODELS.items()}
    if model in inverse:  # our variant names first: "efficientdet_d0" is ours (TF padding) = tf_efficientdet_d0
        return inverse[model]
    if model in REFERENCE_MODELS:
        return model
    raise SystemExit(f"error: --compare-reference needs a variant the reference port has ({', '.join(inverse)}), "
                     f"got {model!r}")


def build_models(args: argparse.Namespace, overrides: dict[str, Any], work: Path
                 ) -> tuple[torch.nn.Module, str | None, Path | None]:
    """Our model (eval mode, CPU) and, with --compare-reference, the reference name and weights file."""
    overrides = dict(overrides, drop_path_rate=0.0)  # deterministic training step on both sides
    if args.num_classes is not None:
        overrides["num_classes"] = args.num_classes
    if args.image_size:
        overrides["image_size"] = list(args.image_size)
    if not args.compare_reference:
        if args.weights:
            model, _ = load_model(args.weights, model=args.model, **overrides)
        else:
            torch.manual_seed(args.seed)
            model = create_model(args.model or "efficientdet_d0", **overrides)
        return model.eval(), None, None
    if args.weights:
        raise SystemExit("error: --compare-reference uses random weights exported by the reference; drop --weights")
    ref_name = _reference_name(args.model or "efficientdet_d0")
    cfg = create_model(args.model or "efficientdet_d0", **overrides).config
    weights = work / f"{ref_name}_random.pt"
    print(f"Exporting random {ref_name} weights from the reference to {weights} ...", flush=True)
    _refport().run_reference("export", model_name=ref_name, out=weights, num_classes=cfg.num_classes,
                  image_size=list(cfg.image_size), seed=args.seed, probe=False)
    model, _ = load_model(weights, model=ref_name, **overrides)
    return model.eval(), ref_name, weights


class Benchmark:
    """The measurements of one run; each task method fills ``report["results"]`` / ``["checks"]``."""

    def __init__(self, args: argparse.Namespace, model: torch.nn.Module, device: torch.device, work: Path,
                 worker: ReferenceWorker | None, report: dict[str, Any]) -> None:
        self.args, self.model, self.device, self.work, self.worker, self.report = args, model, device, work, worker, report
        self.size = tuple(model.config.image_size)
        self.eager = model.to(device).eval()
        self.optimized = optimize_for_inference(self.eager, self.size)
        self.compiled = None
        if args.compile:
            if device.type == "cpu":
                import torch._inductor.config as inductor_config
                inductor_config.freezing = True  # constant weights, pre-packed for oneDNN
            self.compiled = torch.compile(self.optimized)
        x = random_input(1, self.size, args.seed).to(device)
        with torch.inference_mode():
            report["checks"]["optimized_vs_eager_max_abs_diff"] = max_output_diff(self.optimized(x), self.eager(x))

    def forward(self, batch_size: int) -> None:
        args, device = self.args, self.device
        key = f"forward_b{batch_size}"
        batch = random_input(batch_size, self.size, args.seed)
        path = self.work / f"input_{key}.pt"
        torch.save(batch, path)
        runners: dict[str, Any] = {
            "ours": LocalRunner(ForwardTask(self.optimized, batch, device, args.amp), batch_size, device, args.warmup)}
        if not args.no_eager:
            runners["eager"] = LocalRunner(ForwardTask(self.eager, batch, device, args.amp), batch_size, device,
                                           args.warmup)
        if self.compiled is not None:
            runners["compiled"] = LocalRunner(ForwardTask(self.compiled, batch, device, args.amp), batch_size, device,
                                              max(1, args.warmup))
        if self.worker is not None:
            runners["reference"] = ReferenceRunner(self.worker, "forward", args.warmup, input=str(path), amp=args.amp)
        self.report["results"][key] = {k: m.summary() for k, m in interleave(runners, args.runs, args.rounds).items()}
        if "compiled" in runners:
            self.report["results"][key]["compiled"]["compile_and_warmup_s"] = runners["compiled"].warmup_s

    def runtimes(self) -> None:
        """Batch-1 forward of the fused network exported alone, in each deployment runtime (as shipped:
        ``effdet predict --weights FILE`` runs these files), alternating with our PyTorch forward
        and the reference's in the same rounds. fp32 exports are checked against PyTorch (same
        decoded detections); int8 is calibrated on the benchmark's JPEGs (speed only: its accuracy
        is measured with ``effdet val``)."""
        args = self.args
        cpu = torch.device("cpu")
        graph = NetworkGraph(optimize_for_inference(self.eager.cpu(), self.size, channels_last=False), self.size)
        images = example_input(graph, 1, args.seed)[0]
        onnx_file, xml, xml8 = self.work / "network.onnx", self.work / "network.xml", self.work / "network_int8.xml"
        checks = {"onnxruntime": export_onnx(graph, onnx_file), "openvino": export_openvino(graph, xml)}
        sources = ([Path(p) for p in find_images(args.images)] if args.images else
                   make_jpegs(self.work / "calibration", [(480, 640), (640, 427), (512, 512), (375, 500)] * 4,
                              args.seed))
        export_openvino(graph, xml8, calibration_images(sources, self.size, progress=False))
        threads = args.threads or torch.get_num_threads()
        nets = {"onnxruntime": ExportedNetwork(onnx_file, "onnxruntime", threads),
                "openvino": ExportedNetwork(xml, "openvino", threads),
                "openvino-int8": ExportedNetwork(xml8, "openvino", threads)}
        batch = random_input(1, self.size, args.seed)
        runners: dict[str, Any] = {"ours": LocalRunner(ForwardTask(self.optimized.cpu(), batch, cpu, None), 1, cpu,
                                                       args.warmup)}
        for name, net in nets.items():
            runners[name] = LocalRunner(lambda n=net: n(images), 1, cpu, args.warmup)
        if self.worker is not None:
            path = self.work / "input_runtimes.pt"
            torch.save(batch, path)
            runners["reference"] = ReferenceRunner(self.worker, "forward", args.warmup, input=str(path))
        results = {k: m.summary() for k, m in interleave(runners, args.runs, args.rounds).items()}
        self.report["results"]["runtimes_b1"] = results
        self.report["checks"]["runtimes_vs_pytorch"] = {k: c.message if c else "not checked" for k, c in checks.items()}

    def predict(self) -> None:
        args, device = self.args, self.device
        paths = ([Path(p) for p in find_images(args.images)] if args.images else
                 make_jpegs(self.work / "images", [(480, 640), (640, 427), (512, 512), (375, 500)], args.seed))
        settings = PostprocessSettings(score_threshold=args.score_threshold, max_candidates=args.max_candidates,
                                       max_detections=args.max_detections)
        # the fused network always (the Predictor's own optimize=True would time both and might keep
        # the plain one): the table shows the two side by side
        fused = optimize_for_inference(self.eager, self.size)
        ours = PredictTask(Predictor(fused, self.size, device=device, settings=settings), paths, args.amp)
        runners: dict[str, Any] = {"ours": LocalRunner(ours, len(paths), device, args.warmup)}
        if not args.no_eager:
            eager = PredictTask(Predictor(self.eager, self.size, device=device, settings=settings), paths, args.amp)
            runners["eager"] = LocalRunner(eager, len(paths), device, args.warmup)
        if self.worker is not None:
            runners["reference"] = ReferenceRunner(self.worker, "predict", args.warmup,
                                                   images=[str(p) for p in paths], amp=args.amp)
        self.report["results"]["predict"] = {k: m.summary() for k, m in
                                             interleave(runners, args.runs, args.rounds).items()}
        checks = self.report["checks"]
        if not args.no_eager:
            checks["predict_optimized_vs_eager"] = compare_detections(ours.detections, eager.detections,
                                                                      max_detections=args.max_detections)
        if self.worker is not None:
            out = self.work / "reference_detections.pt"
            self.worker.call("detections", out=str(out))
            theirs = torch.load(out, weights_only=True)
            if args.score_threshold > 0:  # the reference has no threshold: apply it to its output
                theirs = [{k: v[d["scores"] >= args.score_threshold] for k, v in d.items()} for d in theirs]
            checks["predict_vs_reference"] = compare_detections(ours.detections, theirs,
                                                                max_detections=args.max_detections)

    def train(self, batch_size: int) -> None:
        args, device = self.args, self.device
        images, boxes, labels = make_train_batch(batch_size, self.size, self.model.config.num_classes, args.seed)
        ours = TrainStepTask(copy.deepcopy(self.eager), images, boxes, labels, device, amp=args.amp,
                             channels_last=args.train_channels_last)
        runners: dict[str, Any] = {"ours": LocalRunner(ours, batch_size, device, args.warmup)}
        if args.train_channels_last and not args.no_eager:  # the default memory format, for comparison
            eager = TrainStepTask(copy.deepcopy(self.eager), images, boxes, labels, device, amp=args.amp)
            runners["eager"] = LocalRunner(eager, batch_size, device, args.warmup)
        if self.worker is not None:
            batch_file = self.work / "train_batch.pt"
            torch.save({"images": images, "boxes": boxes, "labels": labels}, batch_file)
            runners["reference"] = ReferenceRunner(self.worker, "train", args.warmup, batch=str(batch_file),
                                                   amp=args.amp)
        results = interleave(runners, args.train_runs or args.runs, args.rounds)
        results["ours"].extra["losses"] = list(ours.losses)
        self.report["results"]["train"] = {k: m.summary() for k, m in results.items()}
        if self.worker is not None:
            ours_l, ref_l = results["ours"].extra["losses"], results["reference"].extra["losses"]
            n = min(len(ours_l), len(ref_l))
            rel = [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(ours_l[:n], ref_l[:n])]
            worst = max(range(n), key=rel.__getitem__)
            first_rtol, step_rtol = AMP_LOSS_RTOL if args.amp else (FIRST_LOSS_RTOL, TRAIN_LOSS_RTOL)
            self.report["checks"]["train_loss_vs_reference"] = {
                "ours_first": ours_l[0], "reference_first": ref_l[0], "first_rel_diff": rel[0],
                "max_rel_diff": rel[worst], "worst_step": worst, "steps": n,
                "equal": len(ours_l) == len(ref_l) and rel[0] < first_rtol and rel[worst] < step_rtol}


def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    device = check_device(args.device)
    apply_threads(args.threads)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        raise SystemExit(f"error: unknown task(s) {unknown}; choose from {','.join(TASKS)}")
    batch_size = args.batch_size or (32 if device.type == "cuda" else 8)
    train_batch = args.train_batch_size or (32 if device.type == "cuda" else 4)
    overrides = parse_overrides(args.overrides)

    tmp = tempfile.TemporaryDirectory(prefix="effdet-bench-") if not args.work_dir else None
    work = Path(args.work_dir or tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    refdir = _reference_dir() if args.compare_reference else None
    model, ref_name, weights = build_models(args, overrides, work)
    cfg = model.config
    size = tuple(cfg.image_size)
    report: dict[str, Any] = {
        "settings": {"model": cfg.name, "image_size": list(size), "num_classes": cfg.num_classes,
                     "device": str(device), "threads": torch.get_num_threads(), "amp": args.amp,
                     "batch_size": batch_size, "train_batch_size": train_batch, "runs": args.runs,
                     "rounds": args.rounds, "warmup": args.warmup, "torch": torch.__version__,
                     "score_threshold": args.score_threshold, "max_candidates": args.max_candidates,
                     "max_detections": args.max_detections, "reference": ref_name,
                     "keep_freed_memory": {"ours": freed_memory_kept()},
                     "command": args.command_line},
        "results": {}, "checks": {}, "errors": {}}
    worker = None
    try:
        if refdir is not None:
            worker = ReferenceWorker(refdir, args.threads, work / "reference_worker.log",
                                     keep_freed_memory=args.reference_keep_freed_memory)
            info = worker.call("init", threads=args.threads, device=str(device), model_name=ref_name,
                               num_classes=cfg.num_classes, image_size=list(size), weights=str(weights),
                               max_detection_points=args.max_candidates, max_det_per_image=args.max_detections)
            report["settings"]["keep_freed_memory"]["reference"] = bool(info.get("keeps_freed_memory"))
        bench = Benchmark(args, model, device, work, worker, report)
        steps: list[tuple[str, str, Callable[[], None]]] = [
            ("forward", "forward_b1", lambda: bench.forward(1)),
            ("throughput", f"forward_b{batch_size}", lambda: bench.forward(batch_size)),
            ("predict", "predict", bench.predict),
            ("train", "train", lambda: bench.train(train_batch)),
        ]
        if device.type == "cpu":
            steps.append(("onnx", "onnx_b1", lambda: report["results"].__setitem__(
                "onnx_b1", onnx_benchmark(model, size, work, args))))
            steps.append(("runtimes", "runtimes_b1", bench.runtimes))
        for task, key, step in steps:
            if task not in tasks:
                continue
            print(f"Timing {key} ...", flush=True)
            start = time.perf_counter()
            try:
                step()
            except (RuntimeError, ValueError, OSError, ImportError) as e:  # keep the other figures
                report["errors"][key] = f"{type(e).__name__}: {e}"
                print(f"  {key} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", flush=True)
            print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)
            add_ratios(report)
            if args.json:
                write_json(report, args.json, indent=1)  # partial results survive an interruption
    finally:
        if worker is not None:
            worker.close()
        if tmp is not None:
            tmp.cleanup()
    add_ratios(report)
    return report


def onnx_benchmark(model: torch.nn.Module, size: tuple[int, int], work: Path, args: argparse.Namespace
                   ) -> dict[str, Any]:
    """Export to ONNX and time ONNX Runtime at batch 1 with --threads intra-op threads.

    With ``effdet.export.onnx``: the exported detector (uint8 input, decoding and NMS in the graph),
    from the optimised network ("ours") and from the plain one ("eager"). Without it: the
    optimised network alone via ``torch.onnx.export``.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    if args.threads:
        options.intra_op_num_threads = args.threads
        options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    model = model.cpu().eval()
    variants: dict[str, tuple[Path, dict[str, Any], str]] = {}
    settings = PostprocessSettings(score_threshold=args.score_threshold, max_detections=args.max_detections,
                                   max_candidates=args.max_candidates)
    for name, net in (("ours", optimize_for_inference(model, size, channels_last=False)), ("eager", model)):
        graph = DetectionGraph(net, size, nms=True, settings=settings)
        x, valid = example_input(graph, 1, args.seed)
        path = work / f"{name}.onnx"
        start = time.perf_counter()
        check = export_onnx(graph, path, sample=(x, valid))  # raises ExportError when ORT disagrees with PyTorch
        variants[name] = (path, {"images": x.numpy(), "valid_sizes": valid.numpy()},
                          f"effdet.export.onnx.export_onnx(DetectionGraph({'optimised' if name == 'ours' else 'plain'} "
                          f"network)), {time.perf_counter() - start:.1f} s; check: "
                          f"{check.message if check else 'skipped'}")
    out: dict[str, Any] = {}
    cpu = torch.device("cpu")
    sessions = {name: (ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]), feed)
                for name, (path, feed, _) in variants.items()}
    runners = {}
    for name, (session, feed) in sessions.items():
        runners[name] = LocalRunner(lambda s=session, f=feed: s.run(None, f), 1, cpu, args.warmup)
    for name, m in interleave(runners, args.runs, args.rounds).items():
        out[name] = m.summary()
        out[name]["exported_by"] = variants[name][2]
    return out


def add_ratios(report: dict[str, Any]) -> None:
    """ratio = ours / reference of each figure (time per image; images/s for training)."""
    for key, res in report["results"].items():
        if "reference" not in res:
            continue
        if key == "runtimes_b1":  # every runtime's time / the reference's, measured in the same rounds
            ref = res["reference"]["median_ms_per_image"]
            res["ratios"] = {k: v["median_ms_per_image"] / ref for k, v in res.items()
                             if isinstance(v, dict) and "median_ms_per_image" in v and k != "reference"}
            continue
        ours, ref = res["ours"], res["reference"]
        if key == "train" or key.startswith("forward_b") and key != "forward_b1":
            res["ratio"] = ours["images_per_s"] / ref["images_per_s"]
            res["ratio_best"] = ref["min_ms"] / ref["items_per_run"] / (ours["min_ms"] / ours["items_per_run"])
            res["ratio_kind"] = "throughput ours / reference (higher is better)"
        else:
            res["ratio"] = ours["median_ms_per_image"] / ref["median_ms_per_image"]
            res["ratio_best"] = ours["min_ms"] / ours["items_per_run"] / (ref["min_ms"] / ref["items_per_run"])
            res["ratio_kind"] = "time ours / reference (lower is better)"
        if ours.get("median_cpu_ms") and ref.get("median_cpu_ms"):
            cpu_o, cpu_r = ours["median_cpu_ms"] / ours["items_per_run"], ref["median_cpu_ms"] / ref["items_per_run"]
            res["cpu_ratio"] = cpu_r / cpu_o if res["ratio_kind"].startswith("throughput") else cpu_o / cpu_r
        mem_o, mem_r = res["ours"].get("peak_memory_mb"), res["reference"].get("peak_memory_mb")
        if mem_o is not None and mem_r:
            res["memory_ratio"] = mem_o / mem_r


def print_report(report: dict[str, Any]) -> None:
    s = report["settings"]
    print(f"\n{s['model']} {s['image_size'][0]}x{s['image_size'][1]}, {s['device']}, {s['threads']} threads, "
          f"amp {s['amp'] or 'off'}, torch {s['torch']}; medians of {s['runs']} runs in {s['rounds']} rounds")
    kept = s.get("keep_freed_memory", {})
    print("freed memory kept for reuse (effdet.runtime): "
          + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in kept.items()))
    cols = ("ours", "eager", "compiled", "reference")
    header = f"{'figure':34s}" + "".join(f"{c:>12s}" for c in cols) + f"{'ratio':>8s}{'best':>7s}{'cpu':>7s}"
    print(header)
    print("-" * len(header))
    names = {"forward_b1": "forward b1 (ms)", "predict": "end-to-end predict (ms/img)", "onnx_b1": "ONNX Runtime b1 (ms)"}
    for key, res in report["results"].items():
        if key == "runtimes_b1":
            continue
        throughput = key == "train" or (key.startswith("forward_b") and key != "forward_b1")
        label = names.get(key) or (f"train step b{s['train_batch_size']} (img/s)" if key == "train"
                                   else f"forward {key.split('_')[1]} (img/s)")
        field_ = "images_per_s" if throughput else "median_ms_per_image"
        row = f"{label:34s}" + "".join(f"{res[c][field_]:12.{3 if throughput else 1}f}" if c in res else f"{'':12s}"
                                       for c in cols)
        ratio = res.get("ratio")
        row += f"{ratio:8.2f}{res['ratio_best']:7.2f}" if ratio is not None else f"{'':15s}"
        row += f"{res['cpu_ratio']:7.2f}" if res.get("cpu_ratio") is not None else f"{'':7s}"
        print(row)
        mem = f"{'  peak memory (MiB)':34s}" + "".join(
            f"{res[c]['peak_memory_mb']:12.0f}" if c in res and res[c].get("peak_memory_mb") is not None
            else f"{'':12s}" for c in cols)
        if res.get("memory_ratio") is not None:
            mem += f"{res['memory_ratio']:8.2f}"
        print(mem)
        if "compiled" in res:
            print(f"  torch.compile time incl. warm-up: {res['compiled']['compile_and_warmup_s']:.1f} s")
    runtimes = report["results"].get("runtimes_b1")
    if runtimes:
        print("\nforward b1 of the exported network (ms; ratio: time / reference's, same rounds)")
        ratios = runtimes.get("ratios", {})
        for name, res in runtimes.items():
            if isinstance(res, dict) and "median_ms_per_image" in res:
                ratio = f"{ratios[name]:8.2f}" if name in ratios else ""
                label = "ours (PyTorch, fused)" if name == "ours" else name
                print(f"  {label:30s}{res['median_ms_per_image']:10.1f}{ratio}")
    for name, check in report["checks"].items():
        print(f"check {name}: {json.dumps(check)}")
    for key, error in report.get("errors", {}).items():
        print(f"FAILED {key}: {error}")


def run(args: argparse.Namespace) -> int:
    report = run_benchmark(args)
    print_report(report)
    if args.json:
        print(f"figures written to {write_json(report, args.json, indent=1)}")
    return 0
