"""Run an exported network (ONNX file or OpenVINO IR) as this project's detector.

``effdet export --network`` (and every ``--format openvino`` / ``--int8`` export) writes the
network alone, with the model's config, class names and input format in the file's metadata.
:func:`load_exported` opens such a file with a deployment runtime and returns an
:class:`ExportedNetwork`: an ``nn.Module`` without parameters whose ``forward`` runs the runtime
and returns the per-level class and box maps as tensors, and whose ``anchors`` and ``config`` are
the model's. So :func:`effdet.inference.predictor.detect_batch`, the :class:`Predictor` and the
COCO evaluator run it exactly as they run the PyTorch model, with the one post-processing
(top-k, decoding, NMS) in PyTorch.

Backends: ``onnxruntime`` (``.onnx``; CPU, or CUDA where ``onnxruntime-gpu`` is installed) and
``openvino`` (``.xml`` IR, or an ``.onnx`` file; CPU). ``auto`` picks by the file's suffix. An fp32
network runs in fp32 on both (OpenVINO's precision hint is set to f32, since on CPUs with AMX or
AVX-512 BF16 it would otherwise run in bf16); an int8 IR runs with OpenVINO's own choice for the
parts left in floating point.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from effdet.config import ConfigError, from_dict, replace, resolve
from effdet.factory import load_model
from effdet.modeling.efficientdet import build_anchors

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
EXPORTED_SUFFIXES = {".onnx": "onnxruntime", ".xml": "openvino"}
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


@contextlib.contextmanager
def _runtime_threads_without_signals() -> Iterator[None]:
    """Create a runtime's worker threads with SIGINT / SIGTERM blocked, so that these signals reach
    Python's main thread only. Threads inherit the signal mask of the thread that starts them;
    OpenVINO's and ONNX Runtime's pools live on after a call, and a SIGTERM that the kernel handed to
    one of them made a later training in the same process crash (seen in the test suite: a training
    that stops itself with SIGTERM, run after OpenVINO inference)."""
    signals = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class ExportedNetwork(nn.Module):
    """An exported network run by ONNX Runtime or OpenVINO, with the interface of :class:`EfficientDet`
    that inference needs: ``forward(x) -> (class maps, box maps)``, ``anchors``, ``config``,
    ``mean``/``std``. ``takes_uint8``: the file normalises uint8 images itself. Inputs must have the
    exported size (``image_size``); the batch is free."""

    def __init__(self, path: str | Path, backend: str = "auto", threads: int | None = None,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.path = Path(path)
        self.backend = backend_for(path, backend)
        if self.backend == "torch":
            raise BackendError(f"{path} is not an exported network (.onnx, .xml)")
        meta = read_metadata(self.path)
        if meta.get("graph") != "network":
            what = {True: "a graph with NMS (final detections)", False: "a graph of top-k candidates"}.get(
                meta.get("nms"), "no effdet metadata")
            raise BackendError(f"{path} holds {what}, not the network alone, which effdet predict/val run: "
                               "export it with effdet export --network (or --format openvino)")
        try:  # the config of the model, at the size it was exported for (the only size it runs at)
            self.config = replace(from_dict(meta["config"], source=f"{path} metadata"),
                                  {"image_size": meta["image_size"]})
        except (KeyError, ConfigError) as error:
            raise BackendError(f"{path}: its metadata holds no usable model config ({error})") from None
        self.metadata = meta
        self.anchors = build_anchors(self.config)
        self.mean, self.std = tuple(self.config.mean), tuple(self.config.std)
        self.image_size = tuple(self.config.image_size)
        self.takes_uint8 = meta.get("input_format", "uint8") == "uint8"
        self.precision = meta.get("precision", "fp32")
        self.levels = self.config.num_levels
        self.device = torch.device(device)
        threads = threads if threads is not None else torch.get_num_threads()
        self._run = self._onnxruntime(threads) if self.backend == "onnxruntime" else self._openvino(threads)
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
        with _runtime_threads_without_signals():
            session = ort.InferenceSession(str(self.path), options, providers=providers)
            names = [o.name for o in session.get_outputs()]
            session.run(names, {"images": np.zeros((1, 3, *self.image_size),
                                                   np.uint8 if self.takes_uint8 else np.float32)})
        return lambda x: session.run(names, {"images": x})

    def _openvino(self, threads: int):
        if self.device.type != "cpu":
            raise BackendError("the openvino backend runs on the CPU here: use --device cpu")
        ov = _import("openvino")
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if self.precision == "fp32":
            config["INFERENCE_PRECISION_HINT"] = "f32"
        requests: dict[int, Any] = {}

        def run(x: np.ndarray) -> list[np.ndarray]:
            # one compiled model per batch size, with static shapes: OpenVINO's kernels for a fixed
            # shape are faster (D0, 512 px, batch 1: int8 46 ms static vs 67 ms with a dynamic batch,
            # fp32 45 vs 50 ms, measured alternately in one run)
            if x.shape[0] in requests:
                request, outputs = requests[x.shape[0]]
                request.infer([x])
            else:
                model = core.read_model(str(self.path))
                model.reshape([x.shape[0], x.shape[1], *self.image_size])
                with _runtime_threads_without_signals():
                    compiled = core.compile_model(model, "CPU", config)
                    request, outputs = compiled.create_infer_request(), len(compiled.outputs)
                    request.infer([x])  # its threads start here
                requests[x.shape[0]] = (request, outputs)
            return [request.get_output_tensor(i).data.copy() for i in range(outputs)]
        run(np.zeros((1, 3, *self.image_size), np.uint8 if self.takes_uint8 else np.float32))  # fail early
        return run

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        if tuple(x.shape[-2:]) != self.image_size:
            raise BackendError(f"{self.path} was exported for {self.image_size[0]}x{self.image_size[1]} inputs, "
                               f"got {x.shape[-2]}x{x.shape[-1]}: run it at its export size")
        if self.takes_uint8 != (x.dtype == torch.uint8):
            raise BackendError(f"{self.path} takes {'uint8' if self.takes_uint8 else 'normalised float32'} images")
        outputs = [torch.from_numpy(o).to(self.device) for o in self._run(x.contiguous().cpu().numpy())]
        return outputs[:self.levels], outputs[self.levels:]

    def extra_repr(self) -> str:
        return f"{self.path}, backend={self.backend}, precision={self.precision}"


def load_exported(path: str | Path, backend: str = "auto", threads: int | None = None,
                  device: str | torch.device = "cpu") -> tuple[ExportedNetwork, dict[str, Any]]:
    """(network, info) for an exported file, as :func:`effdet.factory.load_model` gives for a checkpoint:
    info holds ``class_names``, ``category_ids`` and the whole metadata."""
    net = ExportedNetwork(path, backend, threads, device)
    meta = net.metadata
    return net, dict(config=net.config, class_names=meta.get("class_names"), category_ids=meta.get("category_ids"),
                     metadata=meta)


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
    net, info = load_exported(weights, chosen, device=device)
    size = resolve(net.config, image_size=image_size).image_size if image_size is not None else net.image_size
    if tuple(size) != net.image_size:
        raise BackendError(f"{weights} was exported for {net.image_size[0]}x{net.image_size[1]} inputs; drop "
                           f"--image-size or export again at {size[0]}x{size[1]}")
    return net, info


__all__ = ["BACKENDS", "BackendError", "ExportedNetwork", "backend_for", "decode_metadata", "load_exported",
           "load_network", "read_metadata"]
