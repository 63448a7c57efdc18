"""Classifying image files with a trained classifier (``effdet classify predict``).

:class:`ClassifierPredictor` reads each file (:func:`effdet.data.images.read_image`), resizes and
centre-crops it as the validation does (:class:`~effdet.data.classification_transforms.ClassifyEvalTransform`),
normalises it with the model's mean / std and returns the top-k classes with their softmax probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from effdet.data.classification_transforms import ClassifyEvalTransform
from effdet.data.images import ImageReadError, read_image
from effdet.factory import load_classifier
from effdet.inference.backends import BackendError, _import, read_metadata
from effdet.runtime import native_runtime_guard, poll_load

EXPORTED_SUFFIXES = (".onnx", ".xml")
"""Files :func:`open_classifier` runs as exported classifiers (ONNX Runtime, OpenVINO)."""


class ExportedClassifier(nn.Module):
    """A classifier exported by ``effdet classify export`` (``.onnx``: ONNX Runtime; ``.xml``: OpenVINO,
    fp32 or int8), as a module the project's evaluation and predictor run like a checkpoint's network.

    ``forward``: N x 3 x S x S float pixel values 0-255 (``mean`` 0 and ``std`` 1/255 make the usual
    normalisation leave them so) -> N x C log-probabilities (their softmax is the file's probabilities).
    The file itself normalises and takes uint8. ``class_names`` and ``image_size`` come from its metadata.

    Raises:
        BackendError: the runtime is not installed, or the file is not an exported classifier.
    """

    mean = (0.0, 0.0, 0.0)
    std = (1 / 255, 1 / 255, 1 / 255)

    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = Path(path)
        meta = read_metadata(self.path)
        if meta.get("task") != "classify":
            raise BackendError(f"{self.path} is not a classifier exported by effdet classify export (a detector's "
                               "exported file runs with effdet predict / val)")
        self.class_names, self.image_size = list(meta["class_names"]), int(meta["image_size"][0])
        self.name = meta.get("model")
        if self.path.suffix.lower() == ".xml":
            with native_runtime_guard():
                compiled = _import("openvino").Core().compile_model(str(self.path), "CPU")
            self._run = lambda images: compiled(images)[0]
        else:
            ort = _import("onnxruntime")
            session = ort.InferenceSession(str(self.path), providers=["CPUExecutionProvider"])
            self._run = lambda images: session.run(["probs"], {"images": images})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        return torch.from_numpy(np.asarray(self._run(images), dtype=np.float32)).clamp_min(1e-12).log()


def open_classifier(weights: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, object]]:
    """``(model in eval mode, info)`` of a classifier checkpoint (:func:`effdet.factory.load_classifier`) or of
    an exported ``.onnx`` / ``.xml`` file (:class:`ExportedClassifier`, run on the CPU); ``info`` holds
    ``class_names``, ``image_size`` and ``model_name``. Raises ``CheckpointError`` or :class:`BackendError`."""
    if Path(weights).suffix.lower() in EXPORTED_SUFFIXES:
        model = ExportedClassifier(weights)
        return model.eval(), dict(class_names=model.class_names, image_size=model.image_size, model_name=model.name)
    return load_classifier(weights, device=device)


@dataclass(frozen=True)
class ClassPrediction:
    """One image's result: ``top`` is ``(class_id, class_name, prob)`` best first; ``error`` is the
    reason the file could not be read (``top`` is then empty)."""

    path: Path
    top: list[tuple[int, str, float]]
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        """The JSON entry: ``image``, ``top`` as ``class_name`` / ``class_id`` / ``prob``, and ``error`` if any."""
        entry: dict[str, object] = dict(image=str(self.path),
                                        top=[dict(class_name=n, class_id=i, prob=round(p, 6)) for i, n, p in self.top])
        if self.error is not None:
            entry["error"] = self.error
        return entry


class ClassifierPredictor:
    """A classifier (N x 3 x S x S normalised images -> N x C logits, with ``mean`` / ``std``) with its
    class names and input side ``image_size``, on ``device``."""

    def __init__(self, model: nn.Module, class_names: Sequence[str], image_size: int,
                 device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.class_names, self.image_size = list(class_names), int(image_size)
        self.transform = ClassifyEvalTransform(self.image_size)
        self._mean = torch.tensor(model.mean, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(model.std, device=self.device).view(1, 3, 1, 1) * 255

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu",
                        image_size: int | None = None) -> "ClassifierPredictor":
        """From an ``effdet classify train`` checkpoint or an exported ``.onnx`` / ``.xml`` file
        (:func:`open_classifier`); the input side is the training one unless ``image_size`` is given.
        Raises ``CheckpointError`` or :class:`~effdet.inference.backends.BackendError`."""
        model, info = open_classifier(path)
        return cls(model, info["class_names"], image_size or info["image_size"],
                   "cpu" if isinstance(model, ExportedClassifier) else device)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x S x S -> N x C float32 softmax probabilities (on the CPU)."""
        poll_load()
        x = (images.to(self.device).float() - self._mean) / self._std
        return self.model(x).float().softmax(1).cpu()

    def predict(self, paths: Sequence[str | Path], top: int = 5, batch_size: int = 16) -> Iterator[ClassPrediction]:
        """One :class:`ClassPrediction` per path, in order; an unreadable file gives one with ``error``."""
        k = min(top, len(self.class_names))
        for start in range(0, len(paths), batch_size):
            chunk = [Path(p) for p in paths[start:start + batch_size]]
            images, readable, errors = [], [], {}
            for path in chunk:
                try:
                    images.append(self.transform(torch.from_numpy(read_image(path)).permute(2, 0, 1)))
                    readable.append(path)
                except ImageReadError as error:
                    errors[path] = str(error)
            probs = self.probabilities(torch.stack(images)) if images else torch.empty(0, len(self.class_names))
            by_path = dict(zip(readable, probs))
            for path in chunk:
                if path in errors:
                    yield ClassPrediction(path, [], errors[path])
                    continue
                values, indices = by_path[path].topk(k)
                yield ClassPrediction(path, [(int(i), self.class_names[int(i)], float(v))
                                             for v, i in zip(values, indices)])


__all__ = ["ClassPrediction", "ClassifierPredictor", "EXPORTED_SUFFIXES", "ExportedClassifier", "open_classifier"]
