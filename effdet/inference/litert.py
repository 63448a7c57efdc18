"""Running a LiteRT (``.tflite``) file written by ``effdet export --format tflite``.

The file takes one input, ``images`` (N, H, W, 3) **uint8 RGB** letterboxed to the export size
(channels last, as TFLite's image models and the Android / iOS task libraries expect); ImageNet
normalisation runs inside it. Its metadata (the model config, class names, input size and
format, the kind of graph) is the JSON sidecar :func:`sidecar_path` beside it
(``model.tflite.json``): the LiteRT converter writes no metadata of its own, so effdet reads this
file, as it reads an ONNX file's ``metadata_props``.

:class:`LiteRTInterpreter` runs such a file with the ``ai-edge-litert`` interpreter (XNNPACK on
the CPU) and returns its outputs as float32 arrays in the file's output order: an int8 file's
quantised outputs are dequantised with their own scale and zero point.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

INSTALL_HINT = 'pip install -e ".[litert]"'
SIDECAR_SUFFIX = ".json"


class LiteRTError(RuntimeError):
    """A ``.tflite`` file that cannot be run (no interpreter installed, unreadable file, wrong input)."""


def sidecar_path(path: str | Path) -> Path:
    """The metadata file of the ``.tflite`` file ``path``: ``path`` + ``.json`` (``model.tflite.json``)."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def read_sidecar(path: str | Path) -> dict[str, str]:
    """The raw metadata of ``path`` (a ``.tflite`` file): its sidecar's JSON object, every value a JSON
    string as in ONNX ``metadata_props`` (decode with ``effdet.inference.backends.decode_metadata``).
    An absent sidecar gives ``{}``; an unreadable one raises :class:`LiteRTError`."""
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        return {}
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise LiteRTError(f"{sidecar}: unreadable metadata of {Path(path).name} ({error}): export the model "
                          "again") from None
    if not isinstance(data, dict):
        raise LiteRTError(f"{sidecar}: metadata must be a JSON object: export the model again")
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise LiteRTError(f"running a .tflite file needs the ai-edge-litert package, which is not installed: "
                          f"{INSTALL_HINT}") from None
    return Interpreter


class LiteRTInterpreter:
    """One ``.tflite`` file in the LiteRT interpreter (XNNPACK, ``threads`` CPU threads).

    ``__call__(images)``: images (N, H, W, C) in the file's input dtype; runs each image (the files
    have batch 1) and returns the outputs, each stacked to (N, ...) float32, in the file's output
    order. ``input_shape`` (1, H, W, C), ``input_dtype`` and ``outputs`` (their names) describe the file.
    """

    def __init__(self, path: str | Path, threads: int = 1) -> None:
        interpreter = _interpreter_class()
        self.path = Path(path)
        try:
            self.interpreter = interpreter(model_path=str(self.path), num_threads=max(1, int(threads)))
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as error:
            raise LiteRTError(f"{self.path}: not a readable LiteRT model ({str(error).splitlines()[0]})") from None
        (self._input,) = self.interpreter.get_input_details()
        self._outputs = self.interpreter.get_output_details()
        self.input_shape = tuple(int(d) for d in self._input["shape"])
        self.input_dtype = np.dtype(self._input["dtype"])
        self.outputs = [d["name"] for d in self._outputs]

    def _output(self, detail: dict[str, Any]) -> np.ndarray:
        value = self.interpreter.get_tensor(detail["index"])
        scale, zero_point = detail["quantization"]
        if np.issubdtype(value.dtype, np.integer) and scale:
            return (value.astype(np.float32) - zero_point) * np.float32(scale)
        return value.astype(np.float32, copy=True)

    def __call__(self, images: np.ndarray) -> list[np.ndarray]:
        if tuple(images.shape[1:]) != self.input_shape[1:] or images.dtype != self.input_dtype:
            raise LiteRTError(f"{self.path} takes {self.input_dtype} images of shape (N, "
                              f"{', '.join(map(str, self.input_shape[1:]))}), got {images.dtype} {tuple(images.shape)}")
        per_image = []
        for image in images:
            self.interpreter.set_tensor(self._input["index"], np.ascontiguousarray(image[None]))
            self.interpreter.invoke()
            per_image.append([self._output(d) for d in self._outputs])
        return [np.concatenate(parts) for parts in zip(*per_image)]


def detections_from_outputs(outputs: list[np.ndarray], image_size: tuple[int, int],
                            valid_sizes: np.ndarray | None = None) -> list[np.ndarray]:
    """A detection file's outputs in TFLite's detection post-processing layout (``boxes`` (N, K, 4)
    float32 (ymin, xmin, ymax, xmax) normalised to 0..1 by the input's height and width, ``classes``
    (N, K) float32 class indices, ``scores`` (N, K) float32, ``count`` (N,) float32) as the ONNX
    detection graph gives them: [boxes (N, K, 4) float32 xyxy input pixels, clipped to each image's
    content ``valid_sizes`` (N, 2) (h, w) (default: the whole frame), scores (N, K), labels (N, K)
    int64 (-1 in padding), num_detections (N,) int64]."""
    boxes, classes, scores, count = outputs
    h, w = image_size
    xyxy = boxes[..., [1, 0, 3, 2]] * np.array([w, h, w, h], np.float32)
    sizes = valid_sizes if valid_sizes is not None else np.tile(np.array(image_size, np.float32), (len(boxes), 1))
    limits = np.asarray(sizes, np.float32)[:, None, [1, 0, 1, 0]]
    xyxy = np.minimum(np.maximum(xyxy, 0.0), limits)
    counts = np.rint(count).astype(np.int64).reshape(-1)
    valid = np.arange(scores.shape[1])[None] < counts[:, None]
    labels = np.where(valid, np.rint(classes).astype(np.int64), -1)
    return [xyxy * valid[..., None], scores * valid, labels, counts]


__all__ = ["INSTALL_HINT", "LiteRTError", "LiteRTInterpreter", "detections_from_outputs", "read_sidecar",
           "sidecar_path"]
