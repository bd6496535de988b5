"""The order and the crops of an epoch, drawn from ``(seed, epoch)`` alone.

Worker processes hold their own copy of the dataset, and a resumed run must see the same cases,
crops and transforms as an uninterrupted one; so everything random about an epoch is a function
of the seed and the epoch number, handed to the workers with each index.

A *global batch* is ``optim.batch_size`` consecutive positions of an epoch's order; it is split
into micro-batches of ``optim.micro_batch_size``, and micro-batch ``j`` of every global batch goes
to rank ``j % world_size``. The gradient of a step is the mean of its micro-batches' gradients
however many ranks share them, so a run started on 2 ranks continues on 1 (or 8) computing the
same steps (float summation order aside).
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
    drawn per global batch of ``batch_size`` (a batch holds one input size): a share
    ``whole_slice_fraction`` of the batches gets whole slices. ``skip`` leaves out the first
    samples of the epoch (those a resumed run has already trained on).

    With micro-batches (``micro_batch_size`` < ``batch_size``) or several ranks, this rank gets
    only its micro-batches, and an epoch's last *incomplete* global batch is left out (as
    ``drop_last`` in PyTorch's DistributedSampler): every step then averages the same number of
    micro-batches on every rank, and no rank waits for a gradient another never computes. The
    order is reshuffled every epoch, so no case is left out for good.
    """

    def __init__(
        self,
        size: int,
        seed: int,
        batch_size: int = 1,
        whole_slice_fraction: float = 0.0,
        *,
        micro_batch_size: int | None = None,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        micro = micro_batch_size or batch_size
        if batch_size % micro or (batch_size // micro) % world_size:
            raise ValueError(
                f"a global batch of {batch_size} in micro-batches of {micro} cannot be shared by "
                f"{world_size} ranks: batch_size / micro_batch_size must be a multiple of the "
                "number of ranks"
            )
        self.size = size
        self.seed = seed
        self.batch_size = batch_size
        self.micro_batch_size = micro
        self.rank = rank
        self.world_size = world_size
        self.whole_slice_fraction = whole_slice_fraction
        self.epoch = 0
        self.skip = 0

    @property
    def micro_batches_per_step(self) -> int:
        """Micro-batches this rank runs for one optimiser step."""
        return self.batch_size // self.micro_batch_size // self.world_size

    @property
    def _sharded(self) -> bool:
        return self.micro_batch_size != self.batch_size or self.world_size > 1

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip

    def _mine(self, position: int) -> bool:
        micro = (position % self.batch_size) // self.micro_batch_size
        return micro % self.world_size == self.rank

    def _end(self) -> int:
        """Positions of the epoch that are trained (the incomplete last batch dropped if sharded)."""
        if self._sharded:
            return self.size // self.batch_size * self.batch_size
        return self.size

    def __len__(self) -> int:
        return sum(1 for position in range(self.skip, self._end()) if self._mine(position))

    def __iter__(self) -> Iterator[tuple[int, int, bool]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.size)
        batches = -(-self.size // self.batch_size)
        crop = rng.random(batches) >= self.whole_slice_fraction
        end = self._end()
        return iter(
            (self.epoch, int(order[position]), bool(crop[position // self.batch_size]))
            for position in range(self.skip, end)
            if self._mine(position)
        )


class EpochDataset(CaseDataset):
    """:class:`CaseDataset` indexed by ``(epoch, index, crop)`` from :class:`EpochSampler`."""

    def __getitem__(self, key: int | tuple[int, int, bool]) -> ModelSample:
        if isinstance(key, int):
            return super().__getitem__(key)
        epoch, index, crop = key
        self.set_epoch(epoch)
        return self.sample(index, crop=crop)
