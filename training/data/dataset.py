"""Cases -> model inputs and masked targets (torch ``Dataset``).

Steps per case, all deterministic given (seed, epoch, index):

1. window stack at source resolution, then onto the model grid as the inference pipeline does
   (``ichnet_core.imaging.model_grid``: the whole field of view resized for legacy weights, a
   fixed millimetre pixel size around the head for diagnostic-resolution weights); label maps
   go by the majority class of each model pixel. The prepared case is kept compactly (windows as
   uint8: a step of 1/255 of a 200 HU window is 0.8 HU, well below CT noise) in memory and, for
   sources that can fingerprint their cases, as ``.npz`` on disk, so a case is generated and
   prepared once (in worker processes: :func:`prepare_all`), not in every training step;
2. for training, a random run of ``slices_per_sample`` consecutive slices (the ConvLSTM needs
   consecutive slices; the subject target of a run is re-derived for that run, see
   :func:`run_subject_labels`);
3. for training, optionally a random square crop of ``crop_size`` model pixels (the nnU-Net way
   of training fully convolutional parts on patches at full resolution): with complete
   segmentations the slice labels of the crop are re-derived from what the crop shows
   (:func:`crop_slice_labels`); cases without a complete segmentation are never cropped;
4. for training, one random geometric transform for all slices and the masks
   (:mod:`training.transforms`);
5. targets plus *known* masks: an unknown label becomes target 0 with known False, and the loss
   ignores it.
"""

from __future__ import annotations

import logging
import multiprocessing
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ichnet_core.durable import write_atomic
from ichnet_core.imaging.model_grid import ModelGrid, PlaneMapping, foreground_map
from ichnet_core.imaging.windowing import NUM_WINDOWS, window_stack
from ichnet_core.labels import (
    HEMORRHAGE,
    NO_COMPARTMENT,
    NUM_CLASSIFICATION_OUTPUTS,
    NUM_COMPARTMENTS,
    NUM_SEGMENTATION_CLASSES,
)
from training.data.case import (
    ANY_COLUMN,
    SUBTYPE_COLUMNS,
    LabelledCase,
    SegKind,
    subject_from_slices,
    unknown_labels,
)
from training.data.source import CaseSource
from training.transforms import AugmentSettings, apply_affine, sample_params

logger = logging.getLogger(__name__)

#: Window values in [0, 1] are stored as ``round(255 * v)``.
IMAGE_LEVELS: Final[int] = 255
PREPARED_FORMAT: Final[str] = "ichnet-prepared-case/1"


@dataclass(frozen=True)
class PreparedCase:
    """A case on the model grid, before cropping and augmentation.

    ``image`` is ``(S, 3, I, I)`` uint8 (window value x 255); ``seg`` is ``(S, I, I)`` uint8 or
    ``None``; ``compartments`` ``(S, I, I)`` uint8 (0 = none/unknown, else ``1 +`` SUBTYPES
    index, only on hemorrhage pixels) or ``None``; ``mapping`` places the grid on the source.
    """

    case_id: str
    image: np.ndarray
    seg: np.ndarray | None
    seg_kind: SegKind
    slice_labels: np.ndarray | None
    subject_labels: np.ndarray | None
    compartments: np.ndarray | None
    mapping: PlaneMapping

    @property
    def num_slices(self) -> int:
        return int(self.image.shape[0])


@dataclass
class ModelSample:
    """One model input with its masked targets (tensors on the CPU until moved).

    Attributes
    ----------
    image:
        ``[S, 3, H, W]`` float32 window stack.
    seg:
        ``[S, H, W]`` int64 classes (all 0 when ``seg_kind`` is NONE).
    seg_kind:
        Which segmentation classes are known.
    slice_targets, slice_known:
        ``[S, 6]`` float32 targets and bool known mask.
    subject_targets, subject_known:
        ``[6]`` float32 targets and bool known mask.
    compartments:
        ``[S, H, W]`` int64, 0 = no hemorrhage or compartment unknown, else ``1 +`` SUBTYPES index.
    """

    case_id: str
    image: Tensor
    seg: Tensor
    seg_kind: SegKind
    slice_targets: Tensor
    slice_known: Tensor
    subject_targets: Tensor
    subject_known: Tensor
    compartments: Tensor

    @property
    def num_slices(self) -> int:
        return int(self.image.shape[0])


def prepare_case(case: LabelledCase, grid: ModelGrid) -> PreparedCase:
    """Window ``case`` and bring it onto the model grid (see the module docstring)."""
    mapping = grid.plan(case.hu.shape[1:], case.pixel_spacing, foreground_map(case.hu))
    size = grid.input_size
    image = np.empty((case.num_slices, NUM_WINDOWS, size, size), dtype=np.uint8)
    for index in range(case.num_slices):
        windows = mapping.to_model(window_stack(case.hu[index]))
        image[index] = np.rint(np.clip(windows, 0.0, 1.0) * IMAGE_LEVELS)
    seg = (
        mapping.labels_to_model(case.seg, NUM_SEGMENTATION_CLASSES)
        if case.seg is not None
        else None
    )
    compartments = None
    if case.compartments is not None and seg is not None:
        compartments = mapping.labels_to_model(case.compartments, 1 + NUM_COMPARTMENTS)
        compartments[seg != HEMORRHAGE] = NO_COMPARTMENT
    return PreparedCase(
        case_id=case.case_id,
        image=image,
        seg=seg,
        seg_kind=case.seg_kind,
        slice_labels=case.slice_labels,
        subject_labels=case.subject_labels,
        compartments=compartments,
        mapping=mapping,
    )


def _optional(data: np.lib.npyio.NpzFile, key: str) -> np.ndarray | None:
    return data[key] if key in data.files else None


def write_prepared(path: Path, prepared: PreparedCase) -> None:
    """Store ``prepared`` as compressed ``.npz`` (``ichnet_core.durable``: never half written)."""
    arrays: dict[str, np.ndarray] = {
        "format": np.array(PREPARED_FORMAT),
        "image": prepared.image,
        "seg_kind": np.array(prepared.seg_kind.value),
        "source_shape": np.array(prepared.mapping.source_shape),
        "scaled_shape": np.array(prepared.mapping.scaled_shape),
        "offset": np.array(prepared.mapping.offset),
    }
    for key in ("seg", "slice_labels", "subject_labels", "compartments"):
        value = getattr(prepared, key)
        if value is not None:
            arrays[key] = value
    write_atomic(path, lambda handle: np.savez_compressed(handle, **arrays))  # type: ignore[arg-type]


def read_prepared(path: Path, case_id: str) -> PreparedCase:
    """Inverse of :func:`write_prepared`; ``ValueError`` for another format."""
    with np.load(path) as data:
        if str(data["format"]) != PREPARED_FORMAT:
            raise ValueError(f"{path}: format {data['format']!r}, expected {PREPARED_FORMAT}")
        image = data["image"]
        mapping = PlaneMapping(
            source_shape=tuple(int(v) for v in data["source_shape"]),  # type: ignore[arg-type]
            scaled_shape=tuple(int(v) for v in data["scaled_shape"]),  # type: ignore[arg-type]
            offset=tuple(int(v) for v in data["offset"]),  # type: ignore[arg-type]
            input_size=int(image.shape[-1]),
        )
        return PreparedCase(
            case_id=case_id,
            image=image,
            seg=_optional(data, "seg"),
            seg_kind=SegKind(str(data["seg_kind"])),
            slice_labels=_optional(data, "slice_labels"),
            subject_labels=_optional(data, "subject_labels"),
            compartments=_optional(data, "compartments"),
            mapping=mapping,
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


def crop_slice_labels(
    labels: np.ndarray,
    seg: np.ndarray,
    compartments: np.ndarray | None,
    window: tuple[slice, slice],
) -> np.ndarray:
    """Slice labels of a crop of slices with a complete segmentation.

    Per slice and output: positive when the crop holds hemorrhage of it (on the model grid);
    negative when the slice holds some but outside the crop; when the model grid shows none
    although the label is positive (a bleed smaller than a model pixel), unknown. Subtypes
    without a compartment map keep their label only where the crop holds all of the slice's
    hemorrhage, else unknown.

    Parameters
    ----------
    labels:
        ``(S, 6)`` labels of the whole slices.
    seg, compartments:
        ``(S, I, I)`` model-grid maps of the same slices.
    window:
        The crop (rows, columns).
    """
    out = labels.copy()
    blood = seg == HEMORRHAGE
    inside = blood[(slice(None), *window)].any(axis=(1, 2))
    anywhere = blood.any(axis=(1, 2))
    out[:, ANY_COLUMN] = _crop_column(labels[:, ANY_COLUMN], inside, anywhere)
    if compartments is None:
        whole = blood.sum(axis=(1, 2)) == blood[(slice(None), *window)].sum(axis=(1, 2))
        out[~whole, SUBTYPE_COLUMNS] = np.nan
        return out
    for k, column in enumerate(range(SUBTYPE_COLUMNS.start, SUBTYPE_COLUMNS.stop)):
        mask = compartments == k + 1
        out[:, column] = _crop_column(
            labels[:, column],
            mask[(slice(None), *window)].any(axis=(1, 2)),
            mask.any(axis=(1, 2)),
        )
    return out


def _crop_column(label: np.ndarray, inside: np.ndarray, anywhere: np.ndarray) -> np.ndarray:
    column = np.where(inside, 1.0, np.where(anywhere, 0.0, label)).astype(np.float32)
    column[~anywhere & (label == 1)] = np.nan  # sub-pixel bleed: the crop cannot tell
    return column


def make_sample(
    prepared: PreparedCase,
    start: int = 0,
    stop: int | None = None,
    rng: np.random.Generator | None = None,
    augment: AugmentSettings | None = None,
    window: tuple[slice, slice] | None = None,
) -> ModelSample:
    """Targets and input of slices ``start:stop`` (within ``window``) of ``prepared``."""
    stop = prepared.num_slices if stop is None else stop
    whole = start == 0 and stop == prepared.num_slices and window is None
    area = (slice(start, stop), *(window or (slice(None), slice(None))))
    image = torch.from_numpy(prepared.image[area[0], :, area[1], area[2]].astype(np.float32))
    image /= IMAGE_LEVELS
    seg = (
        torch.from_numpy(prepared.seg[area].astype(np.int64)) if prepared.seg is not None else None
    )
    compartments = (
        torch.from_numpy(prepared.compartments[area].astype(np.int64))
        if prepared.compartments is not None
        else None
    )
    if augment is not None:
        if rng is None:
            raise ValueError("augmentation needs an rng")
        params = sample_params(rng, augment)
        if seg is not None and compartments is not None:
            # One nearest-neighbour pass for both maps: compartments are set only on blood.
            image, code = apply_affine(image, seg + NUM_SEGMENTATION_CLASSES * compartments, params)
            assert code is not None
            seg, compartments = code % NUM_SEGMENTATION_CLASSES, code // NUM_SEGMENTATION_CLASSES
        else:
            image, seg = apply_affine(image, seg, params)
    shape = (stop - start, *image.shape[-2:])
    if seg is None:
        seg = torch.zeros(shape, dtype=torch.int64)
    if compartments is None:
        compartments = torch.zeros(shape, dtype=torch.int64)
    slices = prepared.slice_labels[start:stop] if prepared.slice_labels is not None else None
    if slices is not None and window is not None and prepared.seg is not None:
        slices = crop_slice_labels(
            slices,
            prepared.seg[start:stop],
            prepared.compartments[start:stop] if prepared.compartments is not None else None,
            window,
        )
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
        compartments=compartments,
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


def choose_crop(
    seg: np.ndarray, size: int, rng: np.random.Generator, lesion_fraction: float
) -> tuple[slice, slice]:
    """A ``size`` square window of the ``(S, I, I)`` run ``seg``.

    With probability ``lesion_fraction``, and when the run holds hemorrhage, the window is
    placed to contain a randomly chosen hemorrhage pixel (bleeds are ~0.3 % of the pixels: a
    uniform crop would rarely show one); otherwise uniformly.
    """
    limit = seg.shape[-1] - size
    top, left = (int(v) for v in rng.integers(0, limit + 1, size=2))
    if rng.random() < lesion_fraction:
        blood = np.argwhere(seg == HEMORRHAGE)
        if len(blood):
            _, row, column = blood[int(rng.integers(len(blood)))]
            top = int(rng.integers(max(0, row - size + 1), min(row, limit) + 1))
            left = int(rng.integers(max(0, column - size + 1), min(column, limit) + 1))
    return slice(top, top + size), slice(left, left + size)


def _cache_name(case_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", case_id) + ".npz"


class CaseDataset(Dataset[ModelSample]):
    """Training or validation samples from a :class:`CaseSource`.

    Parameters
    ----------
    source:
        The cases.
    grid:
        The model input grid (``ICHNetConfig.grid``).
    slices_per_sample:
        Length of the random run of slices per sample; ``None`` = whole series (validation).
    augment:
        Transform ranges, or ``None`` for no augmentation.
    seed:
        Base of the per-sample random generators ``(seed, epoch, index)``.
    cache_in_memory:
        Keep prepared cases (uint8) in memory after their first use.
    lesion_run_fraction:
        Probability that a training run (and crop) of a series with bleeding is placed to
        contain some (:func:`choose_run`, :func:`choose_crop`).
    crop_size:
        Square training crop in model pixels (``None`` = whole slices); cases without a complete
        segmentation are never cropped (:meth:`sample` can also ask for whole slices).
    prepared_dir:
        Folder for prepared cases on disk (``None``: memory only).
    """

    def __init__(
        self,
        source: CaseSource,
        grid: ModelGrid,
        *,
        slices_per_sample: int | None = None,
        augment: AugmentSettings | None = None,
        seed: int = 0,
        cache_in_memory: bool = False,
        lesion_run_fraction: float = 0.0,
        crop_size: int | None = None,
        prepared_dir: Path | None = None,
    ) -> None:
        if slices_per_sample is not None and slices_per_sample < 1:
            raise ValueError(f"slices_per_sample must be >= 1, got {slices_per_sample}")
        if crop_size is not None and not 0 < crop_size <= grid.input_size:
            raise ValueError(f"crop_size must be in 1..{grid.input_size}, got {crop_size}")
        self.source = source
        self.grid = grid
        self.slices_per_sample = slices_per_sample
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.cache_in_memory = cache_in_memory
        self.lesion_run_fraction = float(lesion_run_fraction)
        self.crop_size = crop_size
        self.prepared_dir = prepared_dir
        self._cache: dict[int, PreparedCase] = {}

    def __len__(self) -> int:
        return len(self.source)

    def set_epoch(self, epoch: int) -> None:
        """Select the random stream of ``epoch`` (runs and transforms differ per epoch)."""
        self.epoch = int(epoch)

    def prepared_path(self, index: int) -> Path | None:
        """Where case ``index`` is kept on disk (``None``: it is not)."""
        fingerprint = self.source.fingerprint(index)
        if self.prepared_dir is None or fingerprint is None:
            return None
        grid = f"{self.grid.input_size}-{self.grid.spacing_mm}"
        return (
            self.prepared_dir
            / grid
            / f"{fingerprint}-{_cache_name(self.source.entries[index].case_id)}"
        )

    def prepared(self, index: int) -> PreparedCase:
        """The prepared case ``index``: from memory, from disk, or prepared now (and kept)."""
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        prepared = self._from_disk(index)
        if prepared is None:
            prepared = prepare_case(self.source[index], self.grid)
            path = self.prepared_path(index)
            if path is not None:
                write_prepared(path, prepared)
        if self.cache_in_memory:
            self._cache[index] = prepared
        return prepared

    def _from_disk(self, index: int) -> PreparedCase | None:
        path = self.prepared_path(index)
        if path is None or not path.is_file():
            return None
        case_id = self.source.entries[index].case_id
        try:
            return read_prepared(path, case_id)
        except (OSError, ValueError, KeyError) as exc:
            logger.warning("prepared case %s unreadable (%s); preparing it again", path, exc)
            return None

    def __getitem__(self, index: int) -> ModelSample:
        return self.sample(index, crop=True)

    def sample(self, index: int, *, crop: bool) -> ModelSample:
        """Sample ``index`` of the current epoch, cropped when ``crop`` and ``crop_size`` say so.

        Whole-slice samples are chosen per batch by the caller (the trainer's sampler): a batch
        must hold one size, since equal-length series are stacked.
        """
        prepared = self.prepared(index)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        start, stop = 0, prepared.num_slices
        if self.slices_per_sample is not None and prepared.num_slices > self.slices_per_sample:
            start = choose_run(prepared, self.slices_per_sample, rng, self.lesion_run_fraction)
            stop = start + self.slices_per_sample
        window = None
        if (
            crop
            and self.crop_size is not None
            and prepared.seg is not None
            and prepared.seg_kind is SegKind.FULL
        ):
            window = choose_crop(
                prepared.seg[start:stop], self.crop_size, rng, self.lesion_run_fraction
            )
        return make_sample(prepared, start, stop, rng, self.augment, window)


def _prepare_one(dataset: CaseDataset, index: int) -> str:
    path = dataset.prepared_path(index)
    if path is not None and path.is_file():
        return "cached"
    prepared = prepare_case(dataset.source[index], dataset.grid)
    if path is not None:
        write_prepared(path, prepared)
    return "prepared"


_WORKER_DATASET: CaseDataset | None = None


def _init_worker(dataset: CaseDataset) -> None:
    global _WORKER_DATASET
    torch.set_num_threads(1)  # the workers are the parallelism; no oversubscription
    _WORKER_DATASET = dataset


def _prepare_in_worker(index: int) -> str:
    assert _WORKER_DATASET is not None
    return _prepare_one(_WORKER_DATASET, index)


def prepare_all(
    dataset: CaseDataset, workers: int, indices: Sequence[int] | None = None
) -> dict[str, int]:
    """Generate and prepare every case of ``dataset`` onto disk, ``workers`` processes at a time.

    Generation (seconds per synthetic case) then happens once, in parallel, before training
    instead of inside the training step. ``indices`` limits it to a share of the cases (each
    rank of a distributed run prepares its own). Returns counts of cases ``prepared`` and
    ``cached``.
    """
    if dataset.prepared_dir is None:
        raise ValueError("prepare_all needs a prepared_dir to write to")
    counts = {"prepared": 0, "cached": 0}
    indices = range(len(dataset)) if indices is None else indices
    if workers <= 1:
        outcomes = [_prepare_one(dataset, index) for index in indices]
    else:
        # Spawned, not forked: a fork of a process whose torch/OpenMP thread pool is running
        # can deadlock in the child (it did here, in the first resize).
        context = multiprocessing.get_context("spawn")
        with context.Pool(workers, initializer=_init_worker, initargs=(dataset,)) as pool:
            outcomes = pool.map(_prepare_in_worker, indices, chunksize=1)
    for outcome in outcomes:
        counts[outcome] += 1
    return counts


def collate_samples(samples: Sequence[ModelSample]) -> list[ModelSample]:
    """Keep a batch as a list: series differ in length, the step groups equal lengths."""
    return list(samples)
