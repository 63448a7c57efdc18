"""One benchmark run: the tasks of :class:`~effdet.benchmarking.settings.BenchmarkSettings` timed
variant beside variant, with their comparisons, into one plain-data report.

:func:`run_benchmark` builds the model (random weights, a checkpoint, or random weights made by the
reference port), then times each task in turn; a task that fails is recorded in the report's
``errors`` and the others go on. The variants of a task alternate in rounds
(:func:`effdet.benchmarking.measure.interleave`):

* ``ours``: the fused network (:func:`effdet.inference.predictor.optimize_for_inference`); for
  training, the ``channels_last`` step;
* ``eager``: the plain network (training: the default memory format);
* ``compiled``: ``torch.compile`` of the fused network;
* ``reference``: the reference port, through a :class:`Reference` passed in (``effdet benchmark
  --compare-reference`` passes the source checkout's ``refport/bench.py``; this module never looks
  for it).

The report is a dict: ``settings`` (what ran), ``results`` (per figure, per variant
:meth:`effdet.benchmarking.measure.Measurement.summary`, and the ratios of
:func:`effdet.benchmarking.compare.add_ratios`), ``checks`` (outputs, detections and losses compared)
and ``errors`` (figure -> message).
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import torch

from effdet.benchmarking.compare import add_ratios, cpu_model, detections_agreement, losses_agreement, max_output_diff
from effdet.benchmarking.inputs import make_jpegs, make_train_batch, random_input
from effdet.benchmarking.measure import LocalRunner, Runner, interleave
from effdet.benchmarking.settings import BenchmarkError, BenchmarkSettings
from effdet.benchmarking.tasks import ForwardTask, PredictTask, TrainStepTask
from effdet.config import EfficientDetConfig, PostprocessSettings
from effdet.data.images import find_images
from effdet.data.results import write_json
from effdet.export import litert
from effdet.export.onnx import DetectionGraph, NetworkGraph, example_input, export_onnx
from effdet.export.openvino import calibration_images, export_openvino
from effdet.factory import create_model, load_model
from effdet.inference.backends import ExportedNetwork
from effdet.inference.predictor import Predictor, optimize_for_inference
from effdet.modeling.efficientdet import EfficientDet
from effdet.runtime import freed_memory_kept

JPEG_SIZES: tuple[tuple[int, int], ...] = ((480, 640), (640, 427), (512, 512), (375, 500))
"""(H, W) of the synthetic JPEGs of the end-to-end figure (COCO-like sizes); 4 times over for int8 calibration."""


class Reference(Protocol):
    """The reference port's side of a comparison: it makes the random weights both sides start
    from, and runs the same tasks in its own process. ``name``: its name of the variant."""

    name: str

    def prepare(self, config: EfficientDetConfig, seed: int, work: Path) -> Path:
        """Random weights for ``config`` made by the reference (``seed``), as a file in ``work``."""
        ...

    def start(self, config: EfficientDetConfig, device: torch.device, threads: int | None,
              postprocess: PostprocessSettings, weights: Path, work: Path) -> dict[str, Any]:
        """Start the reference with ``weights``; returns facts for the report (``keeps_freed_memory``)."""
        ...

    def runner(self, task: str, warmup: int, **inputs: Any) -> Runner:
        """The reference's ``forward`` / ``predict`` / ``train`` on the same inputs, warmed up."""
        ...

    def detections(self, path: Path) -> list[dict[str, torch.Tensor]]:
        """The detections of its last ``predict`` call (per image boxes xyxy, scores, labels 0-based)."""
        ...

    def close(self) -> None:
        ...


def build_model(settings: BenchmarkSettings, reference: Reference | None, work: Path
                ) -> tuple[EfficientDet, Path | None]:
    """Our model in eval mode, stochastic depth off (a deterministic training step on both sides),
    and, with a reference, the weights file both sides load."""
    overrides = dict(settings.overrides, drop_path_rate=0.0)
    if reference is None:
        if settings.weights:
            model, _ = load_model(settings.weights, model=settings.model, **overrides)
        else:
            torch.manual_seed(settings.seed)
            model = create_model(settings.model or "efficientdet_d0", **overrides)
        return model.eval(), None
    config = create_model(settings.model or "efficientdet_d0", **overrides).config
    weights = reference.prepare(config, settings.seed, work)
    model, _ = load_model(weights, model=reference.name, **overrides)
    return model.eval(), weights


class Benchmark:
    """The measurements of one run; each task method fills ``report["results"]`` / ``["checks"]``."""

    def __init__(self, settings: BenchmarkSettings, model: EfficientDet, device: torch.device, work: Path,
                 reference: Reference | None, report: dict[str, Any]) -> None:
        self.settings, self.model, self.device, self.work = settings, model, device, work
        self.reference, self.report = reference, report
        self.size = tuple(model.config.image_size)
        self.eager = model.to(device).eval()
        self.optimized = optimize_for_inference(self.eager, self.size)
        self.compiled = None
        if settings.compile:
            if device.type == "cpu":
                import torch._inductor.config as inductor_config
                inductor_config.freezing = True  # constant weights, pre-packed for oneDNN
            self.compiled = torch.compile(self.optimized)
        x = random_input(1, self.size, settings.seed).to(device)
        with torch.inference_mode():
            report["checks"]["optimized_vs_eager_max_abs_diff"] = max_output_diff(self.optimized(x), self.eager(x))

    def _jpegs(self, folder: str, repeat: int = 1) -> list[Path]:
        """``--images`` as files, else synthetic JPEGs of :data:`JPEG_SIZES` (``repeat`` times) in ``folder``."""
        s = self.settings
        if s.images:
            return [Path(p) for p in find_images(list(s.images))]
        return make_jpegs(self.work / folder, list(JPEG_SIZES) * repeat, s.seed)

    def forward(self, batch_size: int) -> None:
        s, device = self.settings, self.device
        key = f"forward_b{batch_size}"
        batch = random_input(batch_size, self.size, s.seed)
        runners: dict[str, Runner] = {
            "ours": LocalRunner(ForwardTask(self.optimized, batch, device, s.amp), batch_size, device, s.warmup)}
        if s.eager:
            runners["eager"] = LocalRunner(ForwardTask(self.eager, batch, device, s.amp), batch_size, device, s.warmup)
        if self.compiled is not None:
            runners["compiled"] = LocalRunner(ForwardTask(self.compiled, batch, device, s.amp), batch_size, device,
                                              max(1, s.warmup))
        if self.reference is not None:
            path = self.work / f"input_{key}.pt"
            torch.save(batch, path)
            runners["reference"] = self.reference.runner("forward", s.warmup, input=str(path), amp=s.amp)
        self.report["results"][key] = {k: m.summary() for k, m in interleave(runners, s.runs, s.rounds).items()}
        if "compiled" in runners:
            self.report["results"][key]["compiled"]["compile_and_warmup_s"] = runners["compiled"].warmup_s

    def runtimes(self) -> None:
        """Batch-1 forward of the fused network exported alone, in each deployment runtime (as shipped:
        ``effdet predict --weights FILE`` runs these files), alternating with our PyTorch forward
        and the reference's in the same rounds. fp32 exports are checked against PyTorch (same
        decoded detections); int8 is calibrated on the benchmark's JPEGs (speed only: its accuracy
        is measured with ``effdet val``)."""
        s = self.settings
        cpu = torch.device("cpu")
        graph = NetworkGraph(optimize_for_inference(self.eager.cpu(), self.size, channels_last=False), self.size)
        images = example_input(graph, 1, s.seed)[0]
        onnx_file, xml, xml8 = self.work / "network.onnx", self.work / "network.xml", self.work / "network_int8.xml"
        checks = {"onnxruntime": export_onnx(graph, onnx_file), "openvino": export_openvino(graph, xml)}
        calibration = calibration_images(self._jpegs("calibration", repeat=4), self.size, progress=False)
        export_openvino(graph, xml8, calibration)
        threads = s.threads or torch.get_num_threads()
        nets = {"onnxruntime": ExportedNetwork(onnx_file, "onnxruntime", threads),
                "openvino": ExportedNetwork(xml, "openvino", threads),
                "openvino-int8": ExportedNetwork(xml8, "openvino", threads)}
        if litert.available():  # LiteRT (the [litert] extra) converts the plain network: effdet export's file
            plain = NetworkGraph(self.eager.cpu(), self.size)
            tflite, tflite8 = self.work / "network.tflite", self.work / "network_int8.tflite"
            checks["litert"] = litert.export_litert(plain, tflite)
            litert.export_litert(plain, tflite8, calibration)
            nets["litert"] = ExportedNetwork(tflite, "litert", threads)
            nets["litert-int8"] = ExportedNetwork(tflite8, "litert", threads)
        batch = random_input(1, self.size, s.seed)
        runners: dict[str, Runner] = {
            "ours": LocalRunner(ForwardTask(self.optimized.cpu(), batch, cpu, None), 1, cpu, s.warmup)}
        for name, net in nets.items():
            runners[name] = LocalRunner(lambda n=net: n(images), 1, cpu, s.warmup)
        if self.reference is not None:
            path = self.work / "input_runtimes.pt"
            torch.save(batch, path)
            runners["reference"] = self.reference.runner("forward", s.warmup, input=str(path))
        results = {k: m.summary() for k, m in interleave(runners, s.runs, s.rounds).items()}
        self.report["results"]["runtimes_b1"] = results
        self.report["checks"]["runtimes_vs_pytorch"] = {k: c.message if c else "not checked" for k, c in checks.items()}

    def predict(self) -> None:
        s, device = self.settings, self.device
        paths = self._jpegs("images")
        # the fused network always (the Predictor's own optimize=True would time both and might keep
        # the plain one): the table shows the two side by side
        fused = optimize_for_inference(self.eager, self.size)
        ours = PredictTask(Predictor(fused, self.size, device=device, settings=s.postprocess), paths, s.amp)
        runners: dict[str, Runner] = {"ours": LocalRunner(ours, len(paths), device, s.warmup)}
        if s.eager:
            eager = PredictTask(Predictor(self.eager, self.size, device=device, settings=s.postprocess), paths, s.amp)
            runners["eager"] = LocalRunner(eager, len(paths), device, s.warmup)
        if self.reference is not None:
            runners["reference"] = self.reference.runner("predict", s.warmup, images=[str(p) for p in paths],
                                                         amp=s.amp)
        self.report["results"]["predict"] = {k: m.summary() for k, m in interleave(runners, s.runs, s.rounds).items()}
        checks, most = self.report["checks"], s.postprocess.max_detections
        if s.eager:
            checks["predict_optimized_vs_eager"] = detections_agreement(ours.detections, eager.detections, most)
        if self.reference is not None:
            theirs = self.reference.detections(self.work / "reference_detections.pt")
            threshold = s.postprocess.score_threshold
            if threshold > 0:  # the reference has no threshold: apply it to its output
                theirs = [{k: v[d["scores"] >= threshold] for k, v in d.items()} for d in theirs]
            checks["predict_vs_reference"] = detections_agreement(ours.detections, theirs, most)

    def train(self, batch_size: int) -> None:
        s, device = self.settings, self.device
        images, boxes, labels = make_train_batch(batch_size, self.size, self.model.config.num_classes, s.seed)
        ours = TrainStepTask(copy.deepcopy(self.eager), images, boxes, labels, device, amp=s.amp,
                             channels_last=s.train_channels_last)
        runners: dict[str, Runner] = {"ours": LocalRunner(ours, batch_size, device, s.warmup)}
        if s.train_channels_last and s.eager:  # the default memory format, for comparison
            eager = TrainStepTask(copy.deepcopy(self.eager), images, boxes, labels, device, amp=s.amp)
            runners["eager"] = LocalRunner(eager, batch_size, device, s.warmup)
        if self.reference is not None:
            batch_file = self.work / "train_batch.pt"
            torch.save({"images": images, "boxes": boxes, "labels": labels}, batch_file)
            runners["reference"] = self.reference.runner("train", s.warmup, batch=str(batch_file), amp=s.amp)
        results = interleave(runners, s.train_runs or s.runs, s.rounds)
        results["ours"].extra["losses"] = list(ours.losses)
        self.report["results"]["train"] = {k: m.summary() for k, m in results.items()}
        if self.reference is not None:
            self.report["checks"]["train_loss_vs_reference"] = losses_agreement(
                results["ours"].extra["losses"], results["reference"].extra["losses"], s.amp is not None)

    def onnx(self) -> None:
        """The exported detector (uint8 input, decoding and NMS in the graph) under ONNX Runtime at
        batch 1 with ``threads`` intra-op threads, exported from the fused network ("ours") and from
        the plain one ("eager"); each export is checked against PyTorch first."""
        import onnxruntime as ort

        s = self.settings
        options = ort.SessionOptions()
        if s.threads:
            options.intra_op_num_threads = s.threads
            options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model = self.model.cpu().eval()
        sessions, exported_by = {}, {}
        for name, net in (("ours", optimize_for_inference(model, self.size, channels_last=False)), ("eager", model)):
            graph = DetectionGraph(net, self.size, nms=True, settings=s.postprocess)
            x, valid = example_input(graph, 1, s.seed)
            path = self.work / f"{name}.onnx"
            start = time.perf_counter()
            check = export_onnx(graph, path, sample=(x, valid))  # raises ExportError when ORT disagrees with PyTorch
            exported_by[name] = (f"effdet.export.onnx.export_onnx(DetectionGraph("
                                 f"{'optimised' if name == 'ours' else 'plain'} network)), "
                                 f"{time.perf_counter() - start:.1f} s; check: {check.message if check else 'skipped'}")
            sessions[name] = (ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]),
                              {"images": x.numpy(), "valid_sizes": valid.numpy()})
        cpu = torch.device("cpu")
        runners: dict[str, Runner] = {name: LocalRunner(lambda se=session, f=feed: se.run(None, f), 1, cpu, s.warmup)
                                      for name, (session, feed) in sessions.items()}
        out = {name: {**m.summary(), "exported_by": exported_by[name]}
               for name, m in interleave(runners, s.runs, s.rounds).items()}
        self.report["results"]["onnx_b1"] = out


def run_benchmark(settings: BenchmarkSettings, reference: Reference | None = None,
                  progress: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Measure ``settings.tasks`` and return the report (see the module docstring); with ``reference``,
    the reference port is measured beside ours on the same random weights and inputs.

    ``progress`` receives one line per figure started and finished (None: silent). The report is
    rewritten to ``settings.report_file`` after every figure, so partial results survive an
    interruption. Raises :class:`BenchmarkError` for settings that cannot run (``weights`` with a
    reference: the reference makes the weights).
    """
    if reference is not None and settings.weights:
        raise BenchmarkError("a comparison with the reference port uses random weights made by the reference; "
                             "drop --weights")
    say = progress or (lambda line: None)
    device = torch.device(settings.device)
    batch_size = settings.batch_size or (32 if device.type == "cuda" else 8)
    train_batch = settings.train_batch_size or (32 if device.type == "cuda" else 4)
    tmp = tempfile.TemporaryDirectory(prefix="effdet-bench-") if not settings.work_dir else None
    work = Path(settings.work_dir or tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    try:
        model, weights = build_model(settings, reference, work)
        cfg = model.config
        pp = settings.postprocess
        report: dict[str, Any] = {
            "settings": {"model": cfg.name, "image_size": list(cfg.image_size), "num_classes": cfg.num_classes,
                         "device": str(device), "threads": torch.get_num_threads(), "amp": settings.amp,
                         "batch_size": batch_size, "train_batch_size": train_batch, "runs": settings.runs,
                         "rounds": settings.rounds, "warmup": settings.warmup, "torch": torch.__version__, "cpu": cpu_model(),
                         "score_threshold": pp.score_threshold, "nms_iou": pp.nms_iou,
                         "max_candidates": pp.max_candidates, "max_detections": pp.max_detections,
                         "reference": reference.name if reference is not None else None,
                         "keep_freed_memory": {"ours": freed_memory_kept()}, "command": settings.command_line},
            "results": {}, "checks": {}, "errors": {}}
        if reference is not None:
            info = reference.start(cfg, device, settings.threads, pp, weights, work)  # type: ignore[arg-type]
            report["settings"]["keep_freed_memory"]["reference"] = bool(info.get("keeps_freed_memory"))
        bench = Benchmark(settings, model, device, work, reference, report)
        steps: list[tuple[str, str, Callable[[], None]]] = [
            ("forward", "forward_b1", lambda: bench.forward(1)),
            ("throughput", f"forward_b{batch_size}", lambda: bench.forward(batch_size)),
            ("predict", "predict", bench.predict),
            ("train", "train", lambda: bench.train(train_batch)),
        ]
        if device.type == "cpu":
            steps += [("onnx", "onnx_b1", bench.onnx), ("runtimes", "runtimes_b1", bench.runtimes)]
        for task, key, step in steps:
            if task not in settings.tasks:
                continue
            say(f"Timing {key} ...")
            start = time.perf_counter()
            try:
                step()
            except (RuntimeError, ValueError, OSError, ImportError) as e:  # keep the other figures
                report["errors"][key] = f"{type(e).__name__}: {e}"
                say(f"  {key} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            say(f"  done in {time.perf_counter() - start:.0f} s")
            add_ratios(report)
            if settings.report_file:
                write_json(report, settings.report_file, indent=1)
    finally:
        if reference is not None:
            reference.close()
        if tmp is not None:
            tmp.cleanup()
    add_ratios(report)
    return report


__all__ = ["JPEG_SIZES", "Benchmark", "Reference", "build_model", "run_benchmark"]
