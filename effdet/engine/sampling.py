"""Reproducible, resumable training batches: a seeded per-epoch batch sampler and per-sample seeds.

Two things make a training run's data a pure function of ``(seed, epoch, position)``:

* :class:`EpochBatchSampler` shuffles with a generator seeded by ``seed + epoch`` (as
  ``DistributedSampler`` does), shards the permutation over ranks and can start an epoch at
  any batch, so a resumed run sees exactly the remaining batches of the interrupted epoch.
  It yields ``(epoch, index)`` keys rather than bare indices.
* :class:`EpochSeededDataset` receives those keys and reseeds the dataset's transform for
  each sample from ``(seed, epoch, index)`` before loading it, so augmentation does not depend
  on the number of DataLoader workers, on which worker loads a sample, or on where a run was
  interrupted.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


def sample_seed(seed: int, epoch: int, index: int) -> int:
    """A 32-bit seed for sample ``index`` in ``epoch`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([seed, epoch, index]).generate_state(1)[0])


class EpochSeededDataset(Dataset):
    """Wraps a dataset whose ``transform`` has ``reseed(seed)``; items are keyed ``(epoch, index)``.

    ``dataset[(epoch, index)]`` reseeds the transform with :func:`sample_seed` and returns
    ``dataset[index]`` unchanged (for a ``CocoDetection``: ``(uint8 3 x H x W image, target)``
    or ``None`` for an unreadable image). A transform without ``reseed`` (e.g. none) is used as is.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset = dataset
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        epoch, index = key
        transform = getattr(self.dataset, "transform", None)
        reseed = getattr(transform, "reseed", None)
        if reseed is not None:
            reseed(sample_seed(self.seed, epoch, index))
        return self.dataset[index]


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(epoch, index)`` keys for one rank; call :meth:`set_epoch` before each epoch.

    Per epoch: a permutation of ``range(num_samples)`` from a generator seeded ``seed + epoch``
    (identity order without ``shuffle``), padded by wrapping around to a multiple of
    ``world_size``; rank ``r`` takes every ``world_size``-th index from ``r``. The rank's share
    is cut into batches of ``batch_size``; the last, incomplete batch is dropped when at least
    one full batch exists (every rank therefore runs the same number of steps). Batches before
    ``start_batch`` are skipped (resuming inside an epoch).
    """

    def __init__(self, num_samples: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 rank: int = 0, world_size: int = 1) -> None:
        if num_samples < 1:
            raise ValueError("the training set has no images; check the annotation file")
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.start_batch = 0

    @property
    def samples_per_rank(self) -> int:
        return math.ceil(self.num_samples / self.world_size)

    @property
    def batches_per_epoch(self) -> int:
        """Optimizer steps in a full epoch (the same on every rank)."""
        return max(1, self.samples_per_rank // self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select the epoch whose batches :meth:`__iter__` yields, starting at batch ``start_batch``."""
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start_batch {start_batch} is outside 0..{self.batches_per_epoch}")
        self.epoch = epoch
        self.start_batch = start_batch

    def indices(self) -> list[int]:
        """This rank's sample indices for the current epoch, in order (before batching)."""
        if self.shuffle:
            g = torch.Generator()
            g.manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.samples_per_rank * self.world_size
        order = (order * math.ceil(total / len(order)))[:total]
        return order[self.rank:total:self.world_size]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        mine = self.indices()
        for b in range(self.start_batch, self.batches_per_epoch):
            yield [(self.epoch, i) for i in mine[b * self.batch_size:(b + 1) * self.batch_size]]

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch


__all__ = ["EpochBatchSampler", "EpochSeededDataset", "sample_seed"]
