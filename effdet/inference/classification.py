"""Classifying image files with a trained classifier (``effdet classify predict``).

:class:`ClassifierPredictor` reads each file (:func:`effdet.data.images.read_image`), resizes and
centre-crops it as the validation does (:class:`~effdet.data.classification_transforms.ClassifyEvalTransform`),
normalises it with the model's mean / std and returns the top-k classes with their softmax probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch import nn

from effdet.data.classification_transforms import ClassifyEvalTransform
from effdet.data.images import ImageReadError, read_image
from effdet.factory import load_classifier


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
        """From an ``effdet classify train`` checkpoint (:func:`effdet.factory.load_classifier`); the input
        side is the training one unless ``image_size`` is given. Raises ``CheckpointError``."""
        model, info = load_classifier(path)
        return cls(model, info["class_names"], image_size or info["image_size"], device)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x S x S -> N x C float32 softmax probabilities (on the CPU)."""
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


__all__ = ["ClassPrediction", "ClassifierPredictor"]
