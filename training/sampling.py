"""The order and the crops of an epoch, drawn from ``(seed, epoch)`` alone.

Worker processes hold their own copy of the dataset, and a resumed run must see the same cases,
crops and transforms as an uninterrupted one; so everything random about an epoch is a function
of the seed and the epoch number, handed to the workers with each index.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from training.data.dataset import CaseDataset, ModelSample


class EpochSampler(Sampler[tuple[int, int, bool]]):
    """Yields ``(epoch, index, crop)`` in an order shuffled by ``(seed, epoch)``.

    Passing the epoch with each index lets worker processes (which hold their own copy of the
    dataset) draw the right random crop and transform without any shared state. ``crop`` is
    drawn per batch of ``batch_size`` (a batch holds one input size): a share
    ``whole_slice_fraction`` of the batches gets whole slices. ``skip`` leaves out the first
    samples of the epoch (those a resumed run has already trained on).
    """

    def __init__(
        self, size: int, seed: int, batch_size: int = 1, whole_slice_fraction: float = 0.0
    ) -> None:
        self.size = size
        self.seed = seed
        self.batch_size = batch_size
        self.whole_slice_fraction = whole_slice_fraction
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    def __len__(self) -> int:
        return self.size - self.skip

    def __iter__(self) -> Iterator[tuple[int, int, bool]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.size)
        batches = -(-self.size // self.batch_size)
        crop = rng.random(batches) >= self.whole_slice_fraction
        return iter(
            (self.epoch, int(index), bool(crop[position // self.batch_size]))
            for position, index in enumerate(order)
            if position >= self.skip
        )


class EpochDataset(CaseDataset):
    """:class:`CaseDataset` indexed by ``(epoch, index, crop)`` from :class:`EpochSampler`."""

    def __getitem__(self, key: int | tuple[int, int, bool]) -> ModelSample:
        if isinstance(key, int):
            return super().__getitem__(key)
        epoch, index, crop = key
        self.set_epoch(epoch)
        return self.sample(index, crop=crop)
