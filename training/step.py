"""One forward pass over a batch of series of different lengths.

A batch holds series of different slice counts. Padding would feed fake slices to the ConvLSTM
and into the subject average, so series of equal length are stacked and run together, and the
outputs are flattened back into batch order (:class:`training.losses.FlatBatch`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from training.data.dataset import ModelSample
from training.losses import FlatBatch


def _cat(parts: Sequence[Tensor | None]) -> Tensor | None:
    """Concatenate per-sample outputs; ``None`` when the model has no such output."""
    present = [part for part in parts if part is not None]
    if len(present) != len(parts):
        return None
    return torch.cat(present)


def forward_batch(
    model: nn.Module, samples: Sequence[ModelSample], device: torch.device
) -> FlatBatch:
    """Run ``model`` on ``samples`` (grouped by length) and flatten outputs and targets.

    The model takes ``[B, S, 3, H, W]`` and returns ``(seg_logits [B, S, 3, H, W] | None,
    slice_logits [B, S, 6] | None, subject_logits [B, 6] | None)`` (ICHNet and the baselines).
    Call it inside the caller's autocast / no_grad context as needed.
    """
    if not samples:
        raise ValueError("forward_batch needs at least one sample")
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, sample in enumerate(samples):  # equal slice counts (and sizes) run together
        groups.setdefault(tuple(sample.image.shape), []).append(index)
    seg: list[Tensor | None] = [None] * len(samples)
    slices: list[Tensor | None] = [None] * len(samples)
    subjects: list[Tensor | None] = [None] * len(samples)
    for members in groups.values():
        images = torch.stack([samples[i].image for i in members]).to(device, non_blocking=True)
        seg_logits, slice_logits, subject_logits = model(images)
        for row, index in enumerate(members):
            seg[index] = seg_logits[row] if seg_logits is not None else None
            slices[index] = slice_logits[row] if slice_logits is not None else None
            subjects[index] = subject_logits[row : row + 1] if subject_logits is not None else None
    lengths = torch.tensor([sample.num_slices for sample in samples])
    return FlatBatch(
        seg_logits=_cat(seg),
        slice_logits=_cat(slices),
        subject_logits=_cat(subjects),
        seg_targets=torch.cat([s.seg for s in samples]).to(device),
        slice_sample=torch.repeat_interleave(torch.arange(len(samples)), lengths).to(device),
        seg_kinds=[s.seg_kind for s in samples],
        slice_targets=torch.cat([s.slice_targets for s in samples]).to(device),
        slice_known=torch.cat([s.slice_known for s in samples]).to(device),
        subject_targets=torch.stack([s.subject_targets for s in samples]).to(device),
        subject_known=torch.stack([s.subject_known for s in samples]).to(device),
        compartment_targets=torch.cat([s.compartments for s in samples]).to(device),
    )
