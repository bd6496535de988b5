"""Data-parallel training with ``torchrun``: process group, gradient averaging, agreement.

``torchrun --nproc-per-node N -m training.cli --config C`` starts N copies of the trainer; each
reads its rank from the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``MASTER_PORT``). NCCL connects them on GPUs (one GPU per rank), gloo on CPUs.
PyTorch's DistributedDataParallel averages the gradients; this module adds what DDP leaves to
the caller:

* every rank must take part in every gradient all-reduce, so a micro-batch whose labels leave a
  head without a loss term (real datasets mix label kinds) still sends a zero gradient for it
  (:class:`StepObjective`'s ``touch_all``), and the loss weights are inside the DDP module;
* decisions taken from local state (a time box, SIGTERM, "no usable labels in this step") are
  agreed across ranks (:meth:`Distributed.any_rank`, :meth:`Distributed.sum`), or one rank would
  wait for ever for a collective the others never start.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from training.config import LossSection
from training.data.dataset import ModelSample
from training.losses import Term, UncertaintyWeighting, compartment_weight_table, loss_terms
from training.step import forward_batch

#: Collectives wait this long: rank 0 validates alone while the others wait at the next step.
COLLECTIVE_TIMEOUT: Final[timedelta] = timedelta(hours=2)
#: Logged per-step values: the total and one per term, each a mean over micro-batches that had it.
LOSS_KEYS: Final[tuple[str, ...]] = ("loss", *(f"loss_{term.value}" for term in Term))


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job; ``world_size == 1`` is an ordinary single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone logs, validates and writes checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on at least one."""
        if not self.enabled:
            return flag
        value = torch.tensor([1.0 if flag else 0.0])
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def sum(self, values: Tensor) -> Tensor:
        """Element-wise sum over ranks (a CPU tensor; gloo and NCCL both reduce it)."""
        if self.enabled:
            device = "cuda" if dist.get_backend() == "nccl" else "cpu"
            reduced = values.to(device)
            dist.all_reduce(reduced)
            return reduced.cpu()
        return values

    def wrap(self, objective: StepObjective, *, touch_all: bool = True) -> nn.Module:
        """DDP around ``objective`` on several ranks (with ``touch_all``, see
        :class:`StepObjective`), ``objective`` itself otherwise."""
        if not self.enabled:
            return objective
        objective.touch_all = touch_all
        return DistributedDataParallel(objective)

    def shard(self, size: int) -> range:
        """This rank's share of ``range(size)`` (work split by index, e.g. case preparation)."""
        return range(self.rank, size, self.world_size)


def from_environment(device: str) -> Distributed:
    """Join the process group torchrun describes in the environment (single process without).

    ``device`` is the config's device (``auto``/``cpu``/``cuda``): NCCL with one GPU per local
    rank where CUDA is used, gloo otherwise.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo", timeout=COLLECTIVE_TIMEOUT)
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank)


def shutdown() -> None:
    """Leave the process group (torchrun expects its workers to end cleanly)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class StepObjective(nn.Module):
    """Network and learned loss weights as one module: the weighted loss of one micro-batch.

    One module so that DDP averages the gradients of both. ``touch_all`` adds zero times every
    output and every loss weight, which changes no value or gradient but puts every parameter
    into the backward pass even when the micro-batch has no label for some head.
    """

    def __init__(
        self,
        network: nn.Module,
        weighting: UncertaintyWeighting,
        loss: LossSection,
        amp_dtype: torch.dtype | None,
        *,
        touch_all: bool = False,
    ) -> None:
        super().__init__()
        self.network = network
        self.weighting = weighting
        self.seg_ce_weight = loss.seg_ce_weight
        self.seg_ce_hemorrhage_weight = loss.seg_ce_hemorrhage_weight
        self.seg_ce_compartment_weights = (
            compartment_weight_table(loss.seg_ce_compartment_weights)
            if loss.seg_ce_compartment_weights
            else None
        )
        self.amp_dtype = amp_dtype
        self.touch_all = touch_all

    def forward(
        self, samples: Sequence[ModelSample], device: torch.device
    ) -> tuple[Tensor, dict[Term, Tensor]]:
        with torch.autocast(device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            batch = forward_batch(self.network, samples, device)
        terms = loss_terms(
            batch,
            seg_ce_weight=self.seg_ce_weight,
            seg_ce_hemorrhage_weight=self.seg_ce_hemorrhage_weight,
            seg_ce_compartment_weights=self.seg_ce_compartment_weights,
        )
        loss = self.weighting(terms)
        if self.touch_all:
            outputs = (batch.seg_logits, batch.slice_logits, batch.subject_logits)
            touched = sum(output.float().sum() for output in outputs if output is not None)
            loss = loss + 0.0 * (touched + self.weighting.log_variances.sum())
        return loss, terms


def no_sync(module: nn.Module, skip: bool) -> contextlib.AbstractContextManager[None]:
    """DDP's ``no_sync`` while accumulating micro-batches (the last one all-reduces)."""
    if skip and isinstance(module, DistributedDataParallel):
        return module.no_sync()
    return contextlib.nullcontext()


def mean_losses(distributed: Distributed, micro: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Per key, the mean over every rank's micro-batches that had it (one all-reduce)."""
    sums = torch.zeros(2 * len(LOSS_KEYS), dtype=torch.float64)
    for values in micro:
        for slot, key in enumerate(LOSS_KEYS):
            if key in values:
                sums[2 * slot] += values[key]
                sums[2 * slot + 1] += 1
    sums = distributed.sum(sums)
    return {
        key: float(sums[2 * slot] / sums[2 * slot + 1])
        for slot, key in enumerate(LOSS_KEYS)
        if sums[2 * slot + 1] > 0
    }


def accumulate(
    objective: nn.Module,
    group: Sequence[Sequence[ModelSample]],
    device: torch.device,
    scaler: torch.amp.GradScaler,
    distributed: Distributed,
) -> dict[str, float]:
    """Backward passes of this rank's micro-batches of one step, each loss divided by their
    number (DDP then averages over the ranks); the step's mean losses over every rank, empty
    when no micro-batch anywhere had a usable label (the step is then skipped)."""
    micro: list[dict[str, float]] = []
    for position, samples in enumerate(group):
        with no_sync(objective, skip=position < len(group) - 1):
            loss, terms = objective(samples, device)
            if terms or distributed.enabled:  # every rank joins DDP's all-reduce
                share = loss / len(group) if len(group) > 1 else loss
                scaler.scale(share).backward()
        if terms:
            values = {"loss": float(loss.detach())}
            values.update({f"loss_{term.value}": float(v.detach()) for term, v in terms.items()})
            micro.append(values)
    return mean_losses(distributed, micro)


def groups(batches: Iterator[list[ModelSample]], size: int) -> Iterator[list[list[ModelSample]]]:
    """The loader's micro-batches in groups of ``size``, one group per optimiser step."""
    group: list[list[ModelSample]] = []
    for batch in batches:
        group.append(batch)
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group
