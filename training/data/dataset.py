"""Cases -> model inputs and masked targets (torch ``Dataset``).

Steps per case, all deterministic given (seed, epoch, index):

1. window stack at source resolution, then in-plane resize to the model input (as the inference
   pipeline does, ``ichnet_core.inference.pipeline.prepare_input``); label maps are resized by
   area-averaging their one-hot planes and taking the majority class;
2. for training, a random run of ``slices_per_sample`` consecutive slices (the ConvLSTM needs
   consecutive slices; the subject target of a run is re-derived for that run, see
   :func:`run_subject_labels`);
3. for training, one random geometric transform for all slices and the mask
   (:mod:`training.transforms`);
4. targets plus *known* masks: an unknown label becomes target 0 with known False, and the loss
   ignores it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ichnet_core.imaging.resample import to_model_size
from ichnet_core.imaging.windowing import NUM_WINDOWS, window_stack
from ichnet_core.labels import NUM_CLASSIFICATION_OUTPUTS, NUM_SEGMENTATION_CLASSES
from training.data.case import (
    ANY_COLUMN,
    LabelledCase,
    SegKind,
    subject_from_slices,
    unknown_labels,
)
from training.data.source import CaseSource
from training.transforms import AugmentSettings, apply_affine, sample_params

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreparedCase:
    """A case at model resolution, before cropping and augmentation.

    ``image`` is ``(S, 3, I, I)`` float16 (windowed values in [0, 1] need no more precision and
    halve the memory of a cached training set); ``seg`` is ``(S, I, I)`` uint8 or ``None``.
    """

    case_id: str
    image: np.ndarray
    seg: np.ndarray | None
    seg_kind: SegKind
    slice_labels: np.ndarray | None
    subject_labels: np.ndarray | None

    @property
    def num_slices(self) -> int:
        return int(self.image.shape[0])


@dataclass
class ModelSample:
    """One model input with its masked targets (tensors on the CPU until moved).

    Attributes
    ----------
    image:
        ``[S, 3, I, I]`` float32 window stack.
    seg:
        ``[S, I, I]`` int64 classes (all 0 when ``seg_kind`` is NONE).
    seg_kind:
        Which segmentation classes are known.
    slice_targets, slice_known:
        ``[S, 6]`` float32 targets and bool known mask.
    subject_targets, subject_known:
        ``[6]`` float32 targets and bool known mask.
    """

    case_id: str
    image: Tensor
    seg: Tensor
    seg_kind: SegKind
    slice_targets: Tensor
    slice_known: Tensor
    subject_targets: Tensor
    subject_known: Tensor

    @property
    def num_slices(self) -> int:
        return int(self.image.shape[0])


def resize_labels(seg: np.ndarray, input_size: int) -> np.ndarray:
    """Majority-class resize of ``(S, R, C)`` labels to ``(S, I, I)``.

    Area-averaged one-hot planes keep the class that covers most of each output pixel; plain
    nearest-neighbour would pick one source pixel and flicker thin structures in and out.
    """
    if seg.shape[-2:] == (input_size, input_size):
        return seg.astype(np.uint8, copy=False)
    out = np.empty((seg.shape[0], input_size, input_size), dtype=np.uint8)
    for index in range(seg.shape[0]):
        one_hot = np.stack(
            [(seg[index] == c).astype(np.float32) for c in range(NUM_SEGMENTATION_CLASSES)]
        )
        out[index] = to_model_size(one_hot, input_size).argmax(axis=0)
    return out


def prepare_case(case: LabelledCase, input_size: int) -> PreparedCase:
    """Window and resize ``case`` to the model input (see the module docstring)."""
    image = np.empty((case.num_slices, NUM_WINDOWS, input_size, input_size), dtype=np.float16)
    for index in range(case.num_slices):
        image[index] = to_model_size(window_stack(case.hu[index]), input_size)
    seg = resize_labels(case.seg, input_size) if case.seg is not None else None
    return PreparedCase(
        case_id=case.case_id,
        image=image,
        seg=seg,
        seg_kind=case.seg_kind,
        slice_labels=case.slice_labels,
        subject_labels=case.subject_labels,
    )


def run_subject_labels(
    subject: np.ndarray | None, slices: np.ndarray | None, whole_series: bool
) -> np.ndarray:
    """Subject target of a run of slices.

    What the run's slices imply wins (:func:`subject_from_slices`). Where they do not decide:
    a negative subject makes every run negative, and a whole-series run keeps the subject label;
    a positive subject says nothing about a partial run (the bleed may lie outside it), so that
    stays unknown.
    """
    derived = subject_from_slices(slices) if slices is not None else unknown_labels()
    if subject is None:
        return derived
    undecided = np.isnan(derived)
    if whole_series:
        derived[undecided] = subject[undecided]
    else:
        negative = undecided & (subject == 0)
        derived[negative] = 0.0
    return derived


def _targets(labels: np.ndarray | None, shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    if labels is None:
        return torch.zeros(shape), torch.zeros(shape, dtype=torch.bool)
    known = ~np.isnan(labels)
    return torch.from_numpy(np.where(known, labels, 0.0).astype(np.float32)), torch.from_numpy(
        known
    )


def make_sample(
    prepared: PreparedCase,
    start: int = 0,
    stop: int | None = None,
    rng: np.random.Generator | None = None,
    augment: AugmentSettings | None = None,
) -> ModelSample:
    """Targets and input of slices ``start:stop`` of ``prepared``, optionally augmented."""
    stop = prepared.num_slices if stop is None else stop
    whole = start == 0 and stop == prepared.num_slices
    image = torch.from_numpy(prepared.image[start:stop].astype(np.float32))
    seg = (
        torch.from_numpy(prepared.seg[start:stop].astype(np.int64))
        if prepared.seg is not None
        else None
    )
    if augment is not None:
        if rng is None:
            raise ValueError("augmentation needs an rng")
        image, seg = apply_affine(image, seg, sample_params(rng, augment))
    if seg is None:
        seg = torch.zeros((stop - start, *image.shape[-2:]), dtype=torch.int64)
    slices = prepared.slice_labels[start:stop] if prepared.slice_labels is not None else None
    subject = run_subject_labels(prepared.subject_labels, slices, whole)
    slice_targets, slice_known = _targets(slices, (stop - start, NUM_CLASSIFICATION_OUTPUTS))
    subject_targets, subject_known = _targets(subject, (NUM_CLASSIFICATION_OUTPUTS,))
    return ModelSample(
        case_id=prepared.case_id,
        image=image,
        seg=seg,
        seg_kind=prepared.seg_kind,
        slice_targets=slice_targets,
        slice_known=slice_known,
        subject_targets=subject_targets,
        subject_known=subject_known,
    )


def choose_run(
    prepared: PreparedCase, length: int, rng: np.random.Generator, lesion_run_fraction: float
) -> int:
    """First slice of a random run of ``length`` slices (``length < prepared.num_slices``).

    With probability ``lesion_run_fraction``, and when the slice labels show bleeding, the run
    is placed uniformly among the positions that contain a randomly chosen bleeding slice;
    otherwise uniformly over the series.
    """
    last_start = prepared.num_slices - length
    labels = prepared.slice_labels
    if labels is not None and rng.random() < lesion_run_fraction:
        bleeding = np.flatnonzero(labels[:, ANY_COLUMN] == 1)
        if bleeding.size:
            target = int(rng.choice(bleeding))
            low, high = max(0, target - length + 1), min(target, last_start)
            return int(rng.integers(low, high + 1))
    return int(rng.integers(0, last_start + 1))


class CaseDataset(Dataset[ModelSample]):
    """Training or validation samples from a :class:`CaseSource`.

    Parameters
    ----------
    source:
        The cases.
    input_size:
        Square in-plane model input.
    slices_per_sample:
        Length of the random run of slices per sample; ``None`` = whole series (validation).
    augment:
        Transform ranges, or ``None`` for no augmentation.
    seed:
        Base of the per-sample random generators ``(seed, epoch, index)``.
    cache_in_memory:
        Keep prepared cases (float16) in memory after their first use.
    lesion_run_fraction:
        Probability that a training run of a series with bleeding slices is placed to contain
        one of them (:func:`choose_run`).
    """

    def __init__(
        self,
        source: CaseSource,
        input_size: int,
        *,
        slices_per_sample: int | None = None,
        augment: AugmentSettings | None = None,
        seed: int = 0,
        cache_in_memory: bool = False,
        lesion_run_fraction: float = 0.0,
    ) -> None:
        if slices_per_sample is not None and slices_per_sample < 1:
            raise ValueError(f"slices_per_sample must be >= 1, got {slices_per_sample}")
        self.source = source
        self.input_size = int(input_size)
        self.slices_per_sample = slices_per_sample
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.cache_in_memory = cache_in_memory
        self.lesion_run_fraction = float(lesion_run_fraction)
        self._cache: dict[int, PreparedCase] = {}

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (runs and transforms differ per epoch)."""
        self.epoch = int(epoch)

    def prepared(self, index: int) -> PreparedCase:
        """The prepared case ``index`` (from the memory cache when enabled)."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        prepared = prepare_case(self.source[index], self.input_size)
        if self.cache_in_memory:
            self._cache[index] = prepared
        return prepared

    def __getitem__(self, index: int) -> ModelSample:
        prepared = self.prepared(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        start, stop = 0, prepared.num_slices
        if self.slices_per_sample is not None and prepared.num_slices > self.slices_per_sample:
            start = choose_run(prepared, self.slices_per_sample, rng, self.lesion_run_fraction)
            stop = start + self.slices_per_sample
        return make_sample(prepared, start, stop, rng, self.augment)


def collate_samples(samples: Sequence[ModelSample]) -> list[ModelSample]:
    """Keep a batch as a list: series differ in length, the step groups equal lengths."""
    return list(samples)
