"""Pre- and post-processing shared by every inference engine.

Only the network execution differs between engines (PyTorch, ONNX Runtime, TensorRT); the model
input and the way outputs become a :class:`~ichnet_core.prediction.Prediction` are defined once
here, so engine results can be compared one to one.

Full-resolution arrays are produced a chunk of slices at a time: a 300-slice 512x512 series as
three float32 class probabilities would otherwise need about 1 GB at once. The labels are decided
as the network's decoder delivers each chunk (:class:`SourceLabels`), so not even the
model-resolution probabilities of the whole series are held (600 MB at 256 px with compartments).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import numpy as np

from ichnet_core.imaging.measure import label_volume_ml
from ichnet_core.imaging.model_grid import ModelGrid, PlaneMapping, foreground_map
from ichnet_core.imaging.windowing import NUM_WINDOWS, window_stack
from ichnet_core.inference.staged import ChunkSink, NetworkOutput
from ichnet_core.labels import (
    BRAIN,
    HEMORRHAGE,
    NO_COMPARTMENT,
    NON_BRAIN,
    NUM_CLASSIFICATION_OUTPUTS,
    NUM_COMPARTMENTS,
    NUM_SEGMENTATION_CLASSES,
)
from ichnet_core.prediction import Prediction

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # imaging.volume imports pydicom; engines must import without it (GPU bench)
    from ichnet_core.imaging.volume import Volume

#: Slices pre-/post-processed together; bounds the temporary full-resolution arrays.
PROCESSING_CHUNK_SLICES: Final[int] = 16


def _chunks(length: int, size: int) -> range:
    return range(0, length, size)


def prepare_input(volume: Volume, grid: ModelGrid) -> tuple[np.ndarray, PlaneMapping]:
    """The model input of ``volume`` and where it lies on the source slices.

    Windows are applied at source resolution, before resizing, so the resize averages clipped
    intensities (air next to bone does not blend into a false soft-tissue value).

    Parameters
    ----------
    volume:
        The series, slices in volume order.
    grid:
        The model's input geometry (``ICHNetConfig.grid``): size and, for diagnostic-resolution
        weights, the physical pixel size; the window is placed on the head.

    Returns
    -------
    tuple
        ``[S, 3, I, I]`` float32 in [0, 1] and the :class:`PlaneMapping` back to the source.
    """
    mapping = grid.plan(volume.hu.shape[1:], volume.pixel_spacing, foreground_map(volume.hu))
    slices, size = volume.num_slices, grid.input_size
    out = np.empty((slices, NUM_WINDOWS, size, size), dtype=np.float32)
    for start in _chunks(slices, PROCESSING_CHUNK_SLICES):
        stop = start + PROCESSING_CHUNK_SLICES
        out[start:stop] = mapping.to_model(window_stack(volume.hu[start:stop]))
    return out, mapping


def channel_argmax(planes: np.ndarray) -> np.ndarray:
    """``planes.argmax(axis=1)`` as uint8 for finite ``[S, C, h, w]``, ties to the first channel.

    Why not numpy's: its argmax along a strided middle axis of a 512x512 series took 0.33 s of
    `ichnet-node infer`'s 5 s on two cores; a running maximum over the contiguous planes gives
    the same indices in a fraction of that.
    """
    best = planes[:, 0].copy()
    index = np.zeros(best.shape, dtype=np.uint8)
    for channel in range(1, planes.shape[1]):
        plane = planes[:, channel]
        higher = plane > best
        index[higher] = channel
        np.maximum(best, plane, out=best)
    return index


def decide_classes(planes: np.ndarray, hemorrhage_threshold: float | None) -> np.ndarray:
    """Class labels (uint8) of ``[S, 3, h, w]`` softmax planes.

    Without ``hemorrhage_threshold``: the most probable class. With it (the weights'
    ``operating_points.voxel.hemorrhage``, see :mod:`ichnet_core.operating_points`): hemorrhage
    wherever its probability is at least the threshold, elsewhere the more probable of non-brain
    and brain, so the segmented volume follows a threshold chosen on validation cases.
    """
    if hemorrhage_threshold is None:
        return channel_argmax(planes)
    others = (NON_BRAIN, BRAIN)
    labels = np.asarray(others, dtype=np.uint8)[channel_argmax(planes[:, list(others)])]
    labels[planes[:, HEMORRHAGE] >= hemorrhage_threshold] = HEMORRHAGE
    return labels


class SourceLabels:
    """Class labels (and compartments) at source resolution, filled a chunk of slices at a time.

    Probabilities, not labels, are upsampled before the decision, so a thin subdural rim keeps
    its shape at source resolution. Source pixels outside the model window are non-brain. Each
    slice is decided on its own, so chunks may come in any size (the engines' decoder chunks, a
    :class:`~ichnet_core.inference.staged.ChunkSink`): the labels are the same as from the whole
    series' probabilities at once, which then never have to exist.

    Parameters
    ----------
    slices:
        Slices of the series.
    mapping:
        Model window on the source slices.
    hemorrhage_threshold:
        The weights' voxel operating point (:func:`decide_classes`); ``None``: the most
        probable class.
    """

    def __init__(
        self, slices: int, mapping: PlaneMapping, hemorrhage_threshold: float | None = None
    ) -> None:
        self.slices = slices
        self.mapping = mapping
        self.hemorrhage_threshold = hemorrhage_threshold
        self.labels = np.empty((slices, *mapping.source_shape), dtype=np.uint8)
        self.compartments: np.ndarray | None = None
        self._filled = 0
        self._class_fill = np.zeros(NUM_SEGMENTATION_CLASSES, dtype=np.float32)
        self._class_fill[NON_BRAIN] = 1.0

    def add(self, start: int, stop: int, seg_probs: np.ndarray) -> None:
        """Decide slices ``start:stop`` from their ``[stop - start, 3 (+5), h, w]`` softmax.

        Raises
        ------
        ValueError
            Chunks out of order, or probabilities that do not fit the series.
        """
        channels = (NUM_SEGMENTATION_CLASSES, NUM_SEGMENTATION_CLASSES + NUM_COMPARTMENTS)
        if (
            start != self._filled
            or not start < stop <= self.slices
            or seg_probs.ndim != 4
            or seg_probs.shape[0] != stop - start
            or seg_probs.shape[1] not in channels
        ):
            raise ValueError(
                f"seg_probs must be [{stop - start}, {NUM_SEGMENTATION_CLASSES} or "
                f"{channels[1]}, h, w] for slices {start}:{stop} of {self.slices} (next "
                f"expected {self._filled}), got {seg_probs.shape}"
            )
        if seg_probs.shape[1] > NUM_SEGMENTATION_CLASSES and self.compartments is None:
            self.compartments = np.zeros(self.labels.shape, dtype=np.uint8)
        for offset in _chunks(stop - start, PROCESSING_CHUNK_SLICES):
            chunk = seg_probs[offset : offset + PROCESSING_CHUNK_SLICES]
            first = start + offset
            last = first + chunk.shape[0]
            classes = decide_classes(
                self.mapping.to_source(chunk[:, :NUM_SEGMENTATION_CLASSES], self._class_fill),
                self.hemorrhage_threshold,
            )
            self.labels[first:last] = classes
            if self.compartments is None:
                continue
            blood = classes == HEMORRHAGE
            if not blood.any():  # most chunks: no compartment planes to bring back at all
                self.compartments[first:last] = NO_COMPARTMENT
                continue
            which = channel_argmax(self.mapping.to_source(chunk[:, NUM_SEGMENTATION_CLASSES:]))
            self.compartments[first:last] = np.where(blood, which + 1, NO_COMPARTMENT)
        self._filled = stop

    def result(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(S, rows, columns)`` uint8 classes, and compartments (``1 + SUBTYPES`` index on
        hemorrhage pixels, 0 elsewhere) or ``None`` without them.

        Raises
        ------
        ValueError
            When not every slice was added.
        """
        if self._filled != self.slices:
            raise ValueError(f"labels of {self._filled} of {self.slices} slices were added")
        return self.labels, self.compartments


def labels_at_source(
    seg_probs: np.ndarray, mapping: PlaneMapping, hemorrhage_threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Class labels (and compartments) at source resolution from model-resolution probabilities
    ``[S, 3 (+5), h, w]`` (see :class:`SourceLabels`)."""
    labels = SourceLabels(seg_probs.shape[0], mapping, hemorrhage_threshold)
    labels.add(0, seg_probs.shape[0], seg_probs)
    return labels.result()


def _check_logits(slices: int, slice_logits: np.ndarray, subject_logits: np.ndarray) -> None:
    if np.shape(slice_logits) != (slices, NUM_CLASSIFICATION_OUTPUTS):
        raise ValueError(
            f"slice_logits must be [{slices}, {NUM_CLASSIFICATION_OUTPUTS}], "
            f"got {np.shape(slice_logits)}"
        )
    if np.shape(subject_logits) != (NUM_CLASSIFICATION_OUTPUTS,):
        raise ValueError(
            f"subject_logits must be [{NUM_CLASSIFICATION_OUTPUTS}], got {np.shape(subject_logits)}"
        )


def finalize(
    volume: Volume,
    mapping: PlaneMapping,
    seg_probs: np.ndarray,
    slice_logits: np.ndarray,
    subject_logits: np.ndarray,
    *,
    keep_probabilities: bool,
    hemorrhage_threshold: float | None = None,
) -> Prediction:
    """Turn network outputs into a :class:`Prediction` at the source resolution.

    Parameters
    ----------
    volume:
        The series the outputs belong to.
    mapping:
        The model window on the source slices (:func:`prepare_input`).
    seg_probs:
        ``[S, 3 (+5), h, w]`` softmax probabilities at model resolution (:func:`labels_at_source`).
    slice_logits:
        ``[S, 6]`` slice-level logits, ``CLASS_NAMES`` order.
    subject_logits:
        ``[6]`` subject-level logits.
    keep_probabilities:
        Keep ``seg_probs`` in the prediction (engine parity checks); otherwise drop them.
    hemorrhage_threshold:
        The weights' voxel operating point (:func:`decide_classes`).

    Returns
    -------
    Prediction
        Labels (and compartments) from :func:`labels_at_source`; classification outputs go
        through a sigmoid.

    Raises
    ------
    ValueError
        When a shape does not match the volume or the label conventions.
    """
    slices = volume.num_slices
    seg_probs = np.asarray(seg_probs, dtype=np.float32)
    slice_logits = np.asarray(slice_logits, dtype=np.float32)
    subject_logits = np.asarray(subject_logits, dtype=np.float32)
    channels = (NUM_SEGMENTATION_CLASSES, NUM_SEGMENTATION_CLASSES + NUM_COMPARTMENTS)
    if seg_probs.ndim != 4 or seg_probs.shape[0] != slices or seg_probs.shape[1] not in channels:
        raise ValueError(
            f"seg_probs must be [{slices}, {NUM_SEGMENTATION_CLASSES} or "
            f"{channels[1]}, h, w] for this volume, got {seg_probs.shape}"
        )
    _check_logits(slices, slice_logits, subject_logits)
    labels, compartments = labels_at_source(seg_probs, mapping, hemorrhage_threshold)
    return _prediction(
        labels,
        compartments,
        slice_logits,
        subject_logits,
        seg_probs if keep_probabilities else None,
    )


def _prediction(
    labels: np.ndarray,
    compartments: np.ndarray | None,
    slice_logits: np.ndarray,
    subject_logits: np.ndarray,
    seg_probs: np.ndarray | None,
) -> Prediction:
    """The :class:`Prediction`; classification outputs go through a sigmoid."""
    from scipy.special import expit  # imported here: the engines must import without scipy

    return Prediction(
        labels=labels,
        slice_probabilities=expit(slice_logits).astype(np.float32),
        subject_probabilities=expit(subject_logits).astype(np.float32),
        segmentation_probabilities=seg_probs,
        compartments=compartments,
    )


def run_pipeline(
    volume: Volume,
    run_network: Callable[[np.ndarray, ChunkSink | None], NetworkOutput],
    grid: ModelGrid,
    *,
    keep_probabilities: bool,
    hemorrhage_threshold: float | None = None,
) -> Prediction:
    """:func:`prepare_input`, the engine's network, then the labels: every engine's predict.

    Without ``keep_probabilities`` each decoded chunk becomes source-resolution labels as the
    network delivers it (:class:`SourceLabels` as the network's sink), so the series'
    model-resolution probabilities are never held whole; the labels are the same as
    :func:`finalize`'s. The model input is dropped once the network has run.

    Parameters
    ----------
    volume:
        The series.
    run_network:
        The engine's network on ``[S, 3, input_size, input_size]``, with an optional
        :class:`~ichnet_core.inference.staged.ChunkSink`.
    grid:
        The model's input geometry.
    keep_probabilities:
        Keep the model-resolution softmax in the prediction.
    hemorrhage_threshold:
        The weights' voxel operating point (:func:`decide_classes`).
    """
    x, mapping = prepare_input(volume, grid)
    if keep_probabilities:
        output = run_network(x, None)
        del x
        return finalize(
            volume,
            mapping,
            output.seg_probs,
            output.slice_logits,
            output.subject_logits,
            keep_probabilities=True,
            hemorrhage_threshold=hemorrhage_threshold,
        )
    decided = SourceLabels(volume.num_slices, mapping, hemorrhage_threshold)
    output = run_network(x, decided.add)
    del x
    _check_logits(volume.num_slices, output.slice_logits, output.subject_logits)
    labels, compartments = decided.result()
    return _prediction(labels, compartments, output.slice_logits, output.subject_logits, None)


class PipelineEngine:
    """Base of the staged engines: ``predict`` = :func:`run_pipeline` around ``run_network``.

    Subclasses provide ``run_network``, ``grid`` and ``description`` and set
    ``hemorrhage_threshold`` from their weights' operating points; only how the network
    executes differs between engines, never the pre- and post-processing.
    """

    #: The weights' voxel operating point (:func:`decide_classes`); ``None``: argmax.
    hemorrhage_threshold: float | None = None

    @property
    def description(self) -> str:
        raise NotImplementedError

    @property
    def grid(self) -> ModelGrid:
        raise NotImplementedError

    @property
    def input_size(self) -> int:
        """Square in-plane size the network reads."""
        return self.grid.input_size

    def run_network(self, x: np.ndarray, sink: ChunkSink | None = None) -> NetworkOutput:
        raise NotImplementedError

    def predict(self, volume: Volume, *, keep_probabilities: bool = False) -> Prediction:
        """Segmentation and classification of ``volume`` (see ``InferenceEngine``)."""
        started = time.perf_counter()
        prediction = run_pipeline(
            volume,
            self.run_network,
            self.grid,
            keep_probabilities=keep_probabilities,
            hemorrhage_threshold=self.hemorrhage_threshold,
        )
        logger.info(
            "%s: series %s, %d slices in %.2f s",
            self.description,
            volume.series_instance_uid,
            volume.num_slices,
            time.perf_counter() - started,
        )
        return prediction


def hemorrhage_volume_ml(labels: np.ndarray, volume: Volume) -> float:
    """Hemorrhage volume in mL: per slice, hemorrhage pixels x pixel volume, summed.

    Uses :meth:`Volume.voxel_volumes_ml`, so non-uniform slice spacing counts each slice with its
    own extent (../shared/DESIGN.md, "Label conventions").

    Raises
    ------
    ValueError
        When ``labels`` is not shaped like ``volume.hu``.
    """
    if labels.shape != volume.hu.shape:
        raise ValueError(
            f"labels shape {labels.shape} does not match the volume's {volume.hu.shape}"
        )
    return label_volume_ml(labels, HEMORRHAGE, volume.voxel_volumes_ml())
