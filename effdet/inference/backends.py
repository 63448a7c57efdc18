"""Run an exported network (ONNX file or OpenVINO IR) as this project's detector.

``effdet export --network`` (and every ``--format openvino`` / ``--int8`` export) writes the
network alone, with the model's config, class names and input format in the file's metadata.
:func:`load_exported` opens such a file with a deployment runtime and returns an
:class:`ExportedNetwork`: an ``nn.Module`` without parameters whose ``forward`` runs the runtime
and returns the per-level class and box maps as tensors, and whose ``anchors`` and ``config`` are
the model's. So :func:`effdet.inference.predictor.detect_batch`, the :class:`Predictor` and the
COCO evaluator run it exactly as they run the PyTorch model, with the one post-processing
(top-k, decoding, NMS) in PyTorch. Its ``class_names`` and ``category_ids`` come from the file,
so ``Predictor(load_exported(path))`` names its detections.

``effdet export --nms`` writes a complete detector (decoding and NMS in the graph, final
detections out): :class:`ExportedNetwork` runs it too (ONNX Runtime), through
:meth:`ExportedNetwork.detect`, which :func:`~effdet.inference.predictor.detect_batch` calls for
such a file. Its post-processing settings are fixed in the file: a higher score threshold or fewer
detections are applied afterwards, anything else it cannot do is a warning (a lower threshold, other
NMS settings) or an error (soft-NMS, flip TTA).

Backends: ``onnxruntime`` (``.onnx``; CPU, or CUDA where ``onnxruntime-gpu`` is installed) and
``openvino`` (``.xml`` IR, or an ``.onnx`` file; CPU). ``auto`` picks by the file's suffix. An fp32
network runs in fp32 on both (OpenVINO's precision hint is set to f32, since on CPUs with AMX or
AVX-512 BF16 it would otherwise run in bf16); an int8 IR runs with OpenVINO's own choice for the
parts left in floating point.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from effdet.config import BACKENDS, ConfigError, from_dict, replace, resolve
from effdet.factory import load_model
from effdet.inference.litert import LiteRTError, LiteRTInterpreter, detections_from_outputs, read_sidecar
from effdet.modeling.efficientdet import build_anchors
from effdet.modeling.postprocess import PostprocessSettings
from effdet.runtime import native_runtime_guard

_GRAPH_SETTINGS = ("score_threshold", "nms_iou", "max_detections", "max_candidates")
"""The post-processing settings a graph with NMS stores in its metadata (``effdet.export.onnx.graph_metadata``)."""

EXPORTED_SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino", ".tflite": "litert"}
METADATA_KEY = "effdet"
"""OpenVINO IR: the rt_info key holding the metadata (a JSON string); ONNX: metadata_props keys."""
INSTALL_HINT = 'pip install -e ".[export]"'


class BackendError(RuntimeError):
    """An exported file that cannot be run (missing runtime, wrong kind of graph, bad file)."""


def backend_for(path: str | Path, backend: str = "auto") -> str:
    """The backend that runs ``path``: ``torch`` for checkpoints, else by suffix (``auto``) or as asked."""
    if backend not in BACKENDS:
        raise BackendError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    suffix = Path(path).suffix.lower()
    exported = EXPORTED_SUFFIXES.get(suffix)
    if backend == "auto":
        return exported or "torch"
    if backend == "torch" and exported:
        raise BackendError(f"{path} is an exported {suffix} file; run it with --backend {exported} (or auto)")
    if backend != "torch" and suffix in (".pt", ".pth", ".bin", ".ckpt"):
        raise BackendError(f"--backend {backend} runs exported networks (.onnx, .xml); {path} is a checkpoint: "
                           f"export it with effdet export --network, or use --backend torch")
    if backend == "onnxruntime" and suffix == ".xml":
        raise BackendError(f"{path} is OpenVINO IR: run it with --backend openvino")
    if (backend == "litert") != (suffix == ".tflite"):
        raise BackendError(f"--backend {backend} cannot run {path}: a .tflite file runs with --backend litert "
                           "(or auto)")
    return backend


def _import(backend: str) -> Any:
    try:
        if backend == "onnxruntime":
            import onnxruntime
            return onnxruntime
        import openvino
        return openvino
    except ImportError:
        raise BackendError(f"the {backend} backend needs the {backend} package, which is not installed: "
                           f"{INSTALL_HINT}") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The effdet metadata of an exported ``.onnx`` or ``.xml`` file (JSON values decoded)."""
    path = Path(path)
    if not path.is_file():
        raise BackendError(f"{path}: no such file")
    if path.suffix.lower() == ".tflite":  # LiteRT: the JSON sidecar (effdet.inference.litert)
        try:
            return decode_metadata(read_sidecar(path))
        except LiteRTError as error:
            raise BackendError(str(error)) from None
    try:
        if path.suffix.lower() == ".xml":
            info = _import("openvino").Core().read_model(str(path)).get_rt_info()
            return json.loads(info[METADATA_KEY].astype(str)) if METADATA_KEY in info else {}
        ort = _import("onnxruntime")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        meta = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).get_modelmeta()
        return decode_metadata(meta.custom_metadata_map)
    except BackendError:
        raise
    except Exception as error:  # the runtimes raise their own types for unreadable files
        raise BackendError(f"{path}: not a readable exported model ({type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''})") from None


def decode_metadata(props: dict[str, str]) -> dict[str, Any]:
    """ONNX ``metadata_props`` (strings) with their JSON values decoded; plain strings stay strings."""
    out: dict[str, Any] = {}
    for key, value in props.items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def openvino_config(threads: int, precision: str) -> dict[str, Any]:
    """OpenVINO CPU compile settings for an exported network: ``threads`` intra-op threads, latency
    hint, and f32 arithmetic for an fp32 file (``precision`` from its metadata; OpenVINO would
    otherwise run bf16 where the CPU has it)."""
    config: dict[str, Any] = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
    if precision == "fp32":
        config["INFERENCE_PRECISION_HINT"] = "f32"
    return config


class ExportedNetwork(nn.Module):
    """An exported network run by ONNX Runtime or OpenVINO, with the interface of :class:`EfficientDet`
    that inference needs: ``forward(x) -> (class maps, box maps)``, ``anchors``, ``config``,
    ``mean``/``std``. ``takes_uint8``: the file normalises uint8 images itself. Inputs must have the
    exported size (``image_size``, (h, w)); the batch is free.

    From the file's metadata: ``class_names`` (list of C names, or None), ``category_ids`` (list of C
    ints, or None), ``metadata`` (all of it). ``has_nms``: the file is a complete detector
    (``effdet export --nms``), run by :meth:`detect` (``forward`` is an error for it).
    """

    def __init__(self, path: str | Path, backend: str = "auto", threads: int | None = None,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.path = Path(path)
        self.backend = backend_for(path, backend)
        if self.backend == "torch":
            raise BackendError(f"{path} is not an exported network (.onnx, .xml)")
        meta = read_metadata(self.path)
        self.graph = meta.get("graph")
        if self.graph not in ("network", "detections"):
            what = "a graph of top-k candidates (no NMS)" if self.graph == "candidates" else "no effdet metadata"
            raise BackendError(f"{path} holds {what}, which effdet predict/val cannot run: export it with "
                               "effdet export --nms (a complete detector) or --network (the network alone)")
        self.has_nms = self.graph == "detections"
        if self.has_nms and self.backend not in ("onnxruntime", "litert"):
            raise BackendError(f"{path} holds a graph with NMS (final detections): run it with --backend onnxruntime")
        if "config" not in meta:
            raise BackendError(f"{path} was exported without its model config (by an older effdet): export it again")
        try:  # the config of the model, at the size it was exported for (the only size it runs at)
            self.config = replace(from_dict(meta["config"], source=f"{path} metadata"),
                                  {"image_size": meta["image_size"]})
        except (KeyError, ConfigError) as error:
            raise BackendError(f"{path}: its metadata holds no usable model config ({error})") from None
        self.metadata = meta
        self.class_names = list(meta["class_names"]) if meta.get("class_names") else None
        self.category_ids = list(meta["category_ids"]) if meta.get("category_ids") else None
        self.settings = PostprocessSettings(**{k: meta[k] for k in _GRAPH_SETTINGS if k in meta}) if self.has_nms else None
        self._warned: set[str] = set()
        self.anchors = build_anchors(self.config)
        self.mean, self.std = tuple(self.config.mean), tuple(self.config.std)
        self.image_size = tuple(self.config.image_size)
        self.takes_uint8 = meta.get("input_format", "uint8") == "uint8"
        self.precision = meta.get("precision", "fp32")
        self.levels = self.config.num_levels
        self.device = torch.device(device)
        threads = threads if threads is not None else torch.get_num_threads()
        runners = dict(onnxruntime=self._onnxruntime, openvino=self._openvino, litert=self._litert)
        self._run = runners[self.backend](threads)
        self.eval()

    def _onnxruntime(self, threads: int):
        ort = _import("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        providers = ["CPUExecutionProvider"]
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendError("ONNX Runtime here has no CUDA provider (install onnxruntime-gpu), or use "
                                   "--device cpu")
            providers.insert(0, "CUDAExecutionProvider")
        with native_runtime_guard():
            session = ort.InferenceSession(str(self.path), options, providers=providers)
            names = [o.name for o in session.get_outputs()]
            with_sizes = "valid_sizes" in [i.name for i in session.get_inputs()]  # a graph with NMS

            def run(x: np.ndarray, valid_sizes: np.ndarray | None = None) -> list[np.ndarray]:
                feed = {"images": x}
                if with_sizes:
                    feed["valid_sizes"] = (valid_sizes if valid_sizes is not None else
                                           np.tile(np.asarray(self.image_size, np.float32), (x.shape[0], 1)))
                return session.run(names, feed)
            run(np.zeros((1, 3, *self.image_size), np.uint8 if self.takes_uint8 else np.float32))
        return run

    def _openvino(self, threads: int):
        if self.device.type != "cpu":
            raise BackendError("the openvino backend runs on the CPU here: use --device cpu")
        ov = _import("openvino")
        core = ov.Core()
        config = openvino_config(threads, self.precision)
        requests: dict[int, Any] = {}

        def run(x: np.ndarray) -> list[np.ndarray]:
            # one compiled model per batch size, with static shapes: OpenVINO's kernels for a fixed
            # shape are faster than for a dynamic batch (docs/measurements/design_notes.md)
            if x.shape[0] in requests:
                request, outputs = requests[x.shape[0]]
                request.infer([x])
            else:
                model = core.read_model(str(self.path))
                model.reshape([x.shape[0], x.shape[1], *self.image_size])
                with native_runtime_guard():
                    compiled = core.compile_model(model, "CPU", config)
                    request, outputs = compiled.create_infer_request(), len(compiled.outputs)
                    request.infer([x])  # its threads start here
                requests[x.shape[0]] = (request, outputs)
            return [request.get_output_tensor(i).data.copy() for i in range(outputs)]
        run(np.zeros((1, 3, *self.image_size), np.uint8 if self.takes_uint8 else np.float32))  # fail early
        return run

    def _litert(self, threads: int):
        """The LiteRT interpreter (:mod:`effdet.inference.litert`): N x 3 x H x W in, the file's NHWC input;
        a detection file's outputs in the ONNX detection graph's layout."""
        if self.device.type != "cpu":
            raise BackendError("the litert backend runs on the CPU here: use --device cpu")
        try:
            interpreter = LiteRTInterpreter(self.path, threads)
        except LiteRTError as error:
            raise BackendError(str(error)) from None

        def run(x: np.ndarray, valid_sizes: np.ndarray | None = None) -> list[np.ndarray]:
            outputs = interpreter(np.ascontiguousarray(x.transpose(0, 2, 3, 1)))
            return detections_from_outputs(outputs, self.image_size, valid_sizes) if self.has_nms else outputs
        return run

    def _check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[-2:]) != self.image_size:
            raise BackendError(f"{self.path} was exported for {self.image_size[0]}x{self.image_size[1]} inputs, "
                               f"got {x.shape[-2]}x{x.shape[-1]}: run it at its export size")
        if self.takes_uint8 != (x.dtype == torch.uint8):
            raise BackendError(f"{self.path} takes {'uint8' if self.takes_uint8 else 'normalised float32'} images")

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if self.has_nms:
            raise BackendError(f"{self.path} holds a graph with NMS: its outputs are final detections (use detect, "
                               "or Predictor / detect_batch, which call it)")
        self._check_input(x)
        outputs = [torch.from_numpy(o).to(self.device) for o in self._run(x.contiguous().cpu().numpy())]
        return outputs[:self.levels], outputs[self.levels:]

    def detect(self, x: torch.Tensor, valid_sizes: torch.Tensor | None = None, scales: torch.Tensor | None = None,
               settings: PostprocessSettings = PostprocessSettings(), flip: bool = False
               ) -> list[dict[str, torch.Tensor]]:
        """Detections of a graph with NMS (``has_nms``), as :func:`effdet.modeling.postprocess.postprocess`
        returns them: per image ``boxes`` (K, 4) float32 xyxy in original pixels (input pixels without
        ``scales``), ``scores`` (K,), ``labels`` (K,) int64. x: N x 3 x H x W as for ``forward``;
        valid_sizes (N, 2) (h, w) content in the frame (default: the whole frame); scales (N,).

        The file's own settings decide; ``settings`` with a higher score threshold or fewer detections
        are applied to its output; other differences are warned about once. Raises
        :class:`BackendError` for soft-NMS or ``flip`` (the graph's NMS cannot pool two views).
        """
        if not self.has_nms:
            raise BackendError(f"{self.path} holds the network alone: run it with detect_batch or Predictor")
        self._check_input(x)
        if settings.soft_nms or flip:
            raise BackendError(f"{self.path} holds a graph with hard NMS inside: {'soft-NMS' if settings.soft_nms else '--flip'} "
                               "needs the network alone (effdet export --network)")
        self._warn_fixed_settings(settings)
        sizes = valid_sizes.float().cpu().numpy() if valid_sizes is not None else None
        boxes, scores, labels, counts = (torch.from_numpy(o) for o in self._run(x.contiguous().cpu().numpy(), sizes))
        results = []
        for i, count in enumerate(counts.tolist()):
            keep = scores[i, :count] >= settings.score_threshold
            keep[settings.max_detections:] = False  # sorted by score: the first max_detections
            b = boxes[i, :count][keep].float()
            if scales is not None:
                b = b / scales[i].to(b)
            results.append(dict(boxes=b.to(self.device), scores=scores[i, :count][keep].float().to(self.device),
                                labels=labels[i, :count][keep].long().to(self.device)))
        return results

    def _warn_fixed_settings(self, settings: PostprocessSettings) -> None:
        """Warn once per difference that the graph's fixed post-processing cannot follow."""
        fixed = self.settings
        notes = []
        if settings.score_threshold < fixed.score_threshold:
            notes.append(f"score threshold {fixed.score_threshold} (asked: {settings.score_threshold})")
        if settings.nms_iou != fixed.nms_iou:
            notes.append(f"NMS IoU {fixed.nms_iou} (asked: {settings.nms_iou})")
        if settings.max_candidates != fixed.max_candidates:
            notes.append(f"{fixed.max_candidates} candidates (asked: {settings.max_candidates})")
        if settings.max_detections > fixed.max_detections:
            notes.append(f"at most {fixed.max_detections} detections (asked: {settings.max_detections})")
        new = [n for n in notes if n not in self._warned]
        if new:
            self._warned.update(new)
            warnings.warn(f"{self.path} has NMS inside, with settings fixed at export: it runs with "
                          f"{', '.join(new)}; export with those flags, or with --network for any settings",
                          stacklevel=3)

    def extra_repr(self) -> str:
        return f"{self.path}, backend={self.backend}, precision={self.precision}"


def load_exported(path: str | Path, backend: str = "auto", threads: int | None = None,
                  device: str | torch.device = "cpu") -> ExportedNetwork:
    """The :class:`ExportedNetwork` of an exported file (``.onnx`` from ``effdet export --network`` or
    ``--nms``, ``.xml`` OpenVINO IR), with its ``class_names``, ``category_ids``, ``image_size`` and
    ``metadata`` as attributes: ``Predictor(load_exported(path))`` detects with the file's class names."""
    return ExportedNetwork(path, backend, threads, device)


def exported_info(net: ExportedNetwork) -> dict[str, Any]:
    """The info dict :func:`effdet.factory.load_model` gives for a checkpoint, for an exported network."""
    return dict(config=net.config, class_names=net.class_names, category_ids=net.category_ids, metadata=net.metadata)


def load_network(weights: str | Path, model: str | None = None, device: str | torch.device = "cpu",
                 backend: str = "auto", image_size: int | str | tuple[int, int] | None = None
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """(network, info) for a checkpoint (:func:`effdet.factory.load_model`, ``torch``) or an exported
    network (:func:`load_exported`, by suffix or ``backend``): what predict and val run.
    ``image_size``: the input the caller will feed (side, ``HxW`` or (h, w)); an exported network runs
    only at its export size, so another one is an error here, before any work."""
    chosen = backend_for(weights, backend)
    if chosen == "torch":
        return load_model(weights, model=model, device=device)
    net = load_exported(weights, chosen, device=device)
    info = exported_info(net)
    size = resolve(net.config, image_size=image_size).image_size if image_size is not None else net.image_size
    if tuple(size) != net.image_size:
        raise BackendError(f"{weights} was exported for {net.image_size[0]}x{net.image_size[1]} inputs; drop "
                           f"--image-size or export again at {size[0]}x{size[1]}")
    return net, info


__all__ = ["BACKENDS", "BackendError", "ExportedNetwork", "backend_for", "decode_metadata", "exported_info",
           "load_exported", "load_network", "openvino_config", "read_metadata"]
