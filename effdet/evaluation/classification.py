"""Classification accuracy as a library: top-1, top-5, per-class accuracy, the confusion matrix and
the most confident mistakes of a classifier on a :class:`~effdet.data.imagefolder.ClassificationDataset`.

Used by ``effdet classify val`` and by classification training between epochs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from effdet.data.loader import worker_init
from effdet.runtime import poll_load


@dataclass
class ClassificationResult:
    """What :func:`evaluate_classifier` measured.

    ``top1`` / ``topk``: fractions of the readable images whose class is the first / among the first
    ``k`` = min(5, classes) predictions; ``loss``: mean cross-entropy (nats) against the true class;
    ``confusion``: C x C counts, row = true class, column = predicted class; ``per_class``: per class
    ``name``, ``images``, ``accuracy`` (None without images); ``worst``: the wrong predictions
    with the highest predicted probability, best first, as ``path``, ``true``, ``pred`` (class
    indices), ``prob`` (of the predicted class), ``true_prob``; ``skipped``: unreadable images.
    """

    top1: float
    topk: float
    k: int
    loss: float
    num_images: int
    skipped: int
    confusion: np.ndarray
    class_names: list[str]
    per_class: list[dict[str, Any]] = field(default_factory=list)
    worst: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data (the confusion matrix as nested lists, paths as strings)."""
        return dict(top1=self.top1, topk=self.topk, k=self.k, loss=self.loss, num_images=self.num_images,
                    skipped=self.skipped, class_names=self.class_names, per_class=self.per_class,
                    confusion=self.confusion.tolist(),
                    worst=[{**w, "path": str(w["path"])} for w in self.worst])


class _Indexed(Dataset):
    """``(image, label, index)`` of a classification dataset, None for an unreadable image."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int] | None:
        item = self.dataset[i]
        return None if item is None else (item[0], item[1], i)


def _collate(batch: Sequence[tuple[torch.Tensor, int, int] | None]
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    kept = [b for b in batch if b is not None]
    if not kept:
        return torch.empty(0, 3, 0, 0, dtype=torch.uint8), torch.empty(0, dtype=torch.int64), \
            torch.empty(0, dtype=torch.int64), len(batch)
    return (torch.stack([b[0] for b in kept]), torch.tensor([b[1] for b in kept]), torch.tensor([b[2] for b in kept]),
            len(batch) - len(kept))


@torch.no_grad()
def evaluate_classifier(model: torch.nn.Module, dataset: Any, batch_size: int = 32, device: str | torch.device = "cpu",
                        workers: int = 0, progress: bool = False, num_worst: int = 16,
                        amp_dtype: torch.dtype | None = None) -> ClassificationResult:
    """Accuracy of ``model`` on ``dataset``.

    Args:
        model: N x 3 x S x S normalised float images -> N x C logits; its ``mean`` / ``std``
            attributes (0-1 scale) normalise the dataset's uint8 images. Evaluated in eval mode
            (its mode is restored afterwards).
        dataset: ``dataset[i]`` -> ``(uint8 3 x S x S image, class index)`` or None (unreadable,
            counted in ``skipped``), with ``class_names`` and ``samples`` (``(path, label)``).
        num_worst: how many of the most confident mistakes to keep.
        amp_dtype: autocast dtype on the device, or None (float32).

    Raises:
        ValueError: no image of ``dataset`` could be read.
    """
    device = torch.device(device)
    names = list(dataset.class_names)
    c = len(names)
    k = min(5, c)
    was_training = model.training
    model.eval()
    mean = torch.tensor(model.mean, device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor(model.std, device=device).view(1, 3, 1, 1) * 255
    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=_collate, worker_init_fn=worker_init, persistent_workers=False)
    confusion = np.zeros((c, c), dtype=np.int64)
    top1 = topk = seen = skipped = 0
    loss_sum = 0.0
    mistakes: list[tuple[float, int, int, int, float]] = []
    try:
        for images, labels, indices, dropped in tqdm(loader, desc="classify val", unit="batch", disable=not progress,
                                                     leave=False, dynamic_ncols=True):
            skipped += dropped
            poll_load()
            if not len(labels):
                continue
            x = (images.to(device).float() - mean) / std
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = model(x)
            logits, labels = logits.float().cpu(), labels.cpu()
            probs = logits.softmax(1)
            loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            ranked = probs.topk(k, dim=1).indices
            pred = ranked[:, 0]
            top1 += int((pred == labels).sum())
            topk += int((ranked == labels[:, None]).any(1).sum())
            seen += len(labels)
            np.add.at(confusion, (labels.numpy(), pred.numpy()), 1)
            for i in torch.nonzero(pred != labels).flatten().tolist():
                mistakes.append((float(probs[i, pred[i]]), int(indices[i]), int(labels[i]), int(pred[i]),
                                 float(probs[i, labels[i]])))
    finally:
        model.train(was_training)
    if not seen:
        raise ValueError(f"none of the {len(dataset)} images could be read")
    mistakes.sort(key=lambda m: (-m[0], m[1]))
    worst = [dict(path=Path(dataset.samples[i][0]), true=t, pred=p, prob=prob, true_prob=tp)
             for prob, i, t, p, tp in mistakes[:num_worst]]
    rows = confusion.sum(1)
    per_class = [dict(name=names[j], images=int(rows[j]),
                      accuracy=float(confusion[j, j] / rows[j]) if rows[j] else None) for j in range(c)]
    return ClassificationResult(top1 / seen, topk / seen, k, loss_sum / seen, seen, skipped, confusion, names,
                                per_class, worst)


def format_classification(result: ClassificationResult, per_class: bool = True) -> str:
    """The summary ``effdet classify val`` prints: top-1, top-k, loss, then one line per class."""
    lines = [f"top-1 {result.top1:.4f}, top-{result.k} {result.topk:.4f}, loss {result.loss:.4f} "
             f"({result.num_images} images" + (f", {result.skipped} unreadable skipped)" if result.skipped else ")")]
    if per_class:
        width = max(len(n) for n in result.class_names)
        lines.append(f"  {'class':<{width}}  images  accuracy")
        for row in result.per_class:
            acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.4f}"
            lines.append(f"  {row['name']:<{width}}  {row['images']:6d}  {acc:>8}")
    return "\n".join(lines)


__all__ = ["ClassificationResult", "evaluate_classifier", "format_classification"]
