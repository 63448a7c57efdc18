"""Batching detection samples and building (optionally distributed) DataLoaders.

Skipped samples: a dataset may return ``None`` for a sample it could not read (see
``effdet.data.coco``). ``collate`` drops those and returns their count as the third element
of every batch, so the training loop can keep going and keep a tally. A batch can therefore
be smaller than ``batch_size``, or even empty (0 x 3 x 0 x 0 images, no targets).
"""

from __future__ import annotations

import os
import random
import signal
import threading
from typing import Any, Sequence

import cv2
import numpy as np
import torch

Sample = tuple[torch.Tensor, dict[str, Any]]


class _OpenCVForkGuard:
    """Forks (DataLoader workers) with OpenCV's thread pool idle: OpenCV's pthreads pool does not
    survive ``fork``. A child of a process whose pool threads were waiting for work inherits their
    condition variable with waiters that do not exist in the child, and the child's first
    ``cv2.setNumThreads`` (:func:`worker_init`) then blocks forever in ``pthread_cond_destroy``.
    Before each fork the parent shrinks its pool to one thread (no pool threads), and restores its
    thread count in the parent afterwards; the child starts with no pool. Registered once, at import."""

    def __init__(self) -> None:
        self.threads = 1

    def before(self) -> None:
        # Only a fork from the main thread (where DataLoaders fork): a fork from another thread may
        # race with OpenCV work in the main thread, and resizing the pool under it is not safe.
        self.threads = cv2.getNumThreads() if threading.current_thread() is threading.main_thread() else 1
        if self.threads != 1:
            cv2.setNumThreads(1)

    def after_in_parent(self) -> None:
        if self.threads != 1:
            cv2.setNumThreads(self.threads)
            self.threads = 1


_FORK_GUARD = _OpenCVForkGuard()
os.register_at_fork(before=_FORK_GUARD.before, after_in_parent=_FORK_GUARD.after_in_parent)


def collate(batch: Sequence[Sample | None]) -> tuple[torch.Tensor, list[dict[str, Any]], int]:
    """Stack samples into a batch, dropping ``None`` (unreadable) samples.

    Args:
        batch: items of a detection dataset: ``(image 3 x H x W uint8, target dict)`` or
            ``None``. All images must have the same H x W (use a transform with a fixed
            ``image_size``).

    Returns:
        (images, targets, skipped): images is a B x 3 x H x W uint8 tensor (B may be 0),
        targets the B target dicts unchanged, skipped the number of ``None`` samples dropped.
    """
    samples = [sample for sample in batch if sample is not None]
    skipped = len(batch) - len(samples)
    if not samples:
        return torch.empty((0, 3, 0, 0), dtype=torch.uint8), [], skipped
    shapes = {tuple(image.shape) for image, _ in samples}
    if len(shapes) > 1:
        raise ValueError(
            f"cannot batch images of different sizes {sorted(shapes)}; give the dataset a "
            "transform with a fixed image_size (effdet.data.transforms)"
        )
    images = torch.stack([image for image, _ in samples])
    return images, [target for _, target in samples], skipped


def worker_init(worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` of every loader in the project.

    * Seeds numpy and ``random`` from the worker's torch seed (reproducible augmentation).
    * One thread each for PyTorch and OpenCV: W workers with their own thread pools next to the
      main process's would oversubscribe the cores (a training step ran 3.7x slower that way).
    * Ignores SIGINT and SIGTERM. Ctrl-C, ``timeout``, systemd, Slurm and Kubernetes signal the
      whole process group; the main process alone decides how to stop (it saves ``last.pt`` at the
      current step) and shuts its workers down itself. A worker that died of the signal would
      instead end the main process with "DataLoader worker ... killed by signal".
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
