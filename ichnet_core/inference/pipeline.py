"""Pre- and post-processing shared by every inference engine.

Only the network execution differs between engines (PyTorch, ONNX Runtime, TensorRT); the model
input and the way outputs become a :class:`~ichnet_core.prediction.Prediction` are defined once
here, so engine results can be compared one to one.

Full-resolution arrays are produced a chunk of slices at a time: a 300-slice 512x512 series as
three float32 class probabilities would otherwise need about 1 GB at once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import numpy as np

from ichnet_core.imaging.resample import to_model_size, to_source_size
from ichnet_core.imaging.windowing import NUM_WINDOWS, window_stack
from ichnet_core.inference.staged import NetworkOutput
from ichnet_core.labels import HEMORRHAGE, NUM_CLASSIFICATION_OUTPUTS, NUM_SEGMENTATION_CLASSES
from ichnet_core.prediction import Prediction

logger = logging.getLogger(__name__)

if TYPE_CHECKING:  # imaging.volume imports pydicom; engines must import without it (GPU bench)
    from ichnet_core.imaging.volume import Volume

#: Slices pre-/post-processed together; bounds the temporary full-resolution arrays.
PROCESSING_CHUNK_SLICES: Final[int] = 16


def _chunks(length: int, size: int) -> range:
    return range(0, length, size)


def prepare_input(volume: Volume, input_size: int) -> np.ndarray:
    """The model input of ``volume``: windowed, then resized in-plane.

    Windows are applied at source resolution, before resizing, so the resize averages clipped
    intensities (air next to bone does not blend into a false soft-tissue value).

    Parameters
    ----------
    volume:
        The series, slices in volume order.
    input_size:
        Square in-plane size of the model (``ICHNetConfig.input_size``).

    Returns
    -------
    np.ndarray
        ``[S, 3, input_size, input_size]`` float32 in [0, 1].
    """
    slices = volume.num_slices
    out = np.empty((slices, NUM_WINDOWS, input_size, input_size), dtype=np.float32)
    for start in _chunks(slices, PROCESSING_CHUNK_SLICES):
        stop = start + PROCESSING_CHUNK_SLICES
        out[start:stop] = to_model_size(window_stack(volume.hu[start:stop]), input_size)
    return out


def finalize(
    volume: Volume,
    seg_probs: np.ndarray,
    slice_logits: np.ndarray,
    subject_logits: np.ndarray,
    *,
    keep_probabilities: bool,
) -> Prediction:
    """Turn network outputs into a :class:`Prediction` at the source resolution.

    Parameters
    ----------
    volume:
        The series the outputs belong to.
    seg_probs:
        ``[S, 3, h, w]`` softmax class probabilities at model resolution.
    slice_logits:
        ``[S, 6]`` slice-level logits, ``CLASS_NAMES`` order.
    subject_logits:
        ``[6]`` subject-level logits.
    keep_probabilities:
        Keep ``seg_probs`` in the prediction (engine parity checks); otherwise drop them.

    Returns
    -------
    Prediction
        Labels are the argmax of the probabilities upsampled bilinearly to the source matrix
        (upsampling probabilities, not labels, gives smooth boundaries); classification
        outputs go through a sigmoid.

    Raises
    ------
    ValueError
        When a shape does not match the volume or the label conventions.
    """
    slices, rows, columns = volume.hu.shape
    seg_probs = np.asarray(seg_probs, dtype=np.float32)
    slice_logits = np.asarray(slice_logits, dtype=np.float32)
    subject_logits = np.asarray(subject_logits, dtype=np.float32)
    if seg_probs.ndim != 4 or seg_probs.shape[:2] != (slices, NUM_SEGMENTATION_CLASSES):
        raise ValueError(
            f"seg_probs must be [{slices}, {NUM_SEGMENTATION_CLASSES}, h, w] for this volume, "
            f"got {seg_probs.shape}"
        )
    if slice_logits.shape != (slices, NUM_CLASSIFICATION_OUTPUTS):
        raise ValueError(
            f"slice_logits must be [{slices}, {NUM_CLASSIFICATION_OUTPUTS}], got {slice_logits.shape}"
        )
    if subject_logits.shape != (NUM_CLASSIFICATION_OUTPUTS,):
        raise ValueError(
            f"subject_logits must be [{NUM_CLASSIFICATION_OUTPUTS}], got {subject_logits.shape}"
        )
    from scipy.special import expit  # imported here: the engines must import without scipy

    labels = np.empty((slices, rows, columns), dtype=np.uint8)
    for start in _chunks(slices, PROCESSING_CHUNK_SLICES):
        stop = start + PROCESSING_CHUNK_SLICES
        upsampled = to_source_size(seg_probs[start:stop], rows, columns)
        labels[start:stop] = upsampled.argmax(axis=1)
    return Prediction(
        labels=labels,
        slice_probabilities=expit(slice_logits).astype(np.float32),
        subject_probabilities=expit(subject_logits).astype(np.float32),
        segmentation_probabilities=seg_probs if keep_probabilities else None,
    )


def run_pipeline(
    volume: Volume,
    run_network: Callable[[np.ndarray], NetworkOutput],
    input_size: int,
    *,
    keep_probabilities: bool,
) -> Prediction:
    """:func:`prepare_input`, the engine's network, then :func:`finalize`: every engine's predict.

    Parameters
    ----------
    volume:
        The series.
    run_network:
        The engine's network on ``[S, 3, input_size, input_size]``.
    input_size:
        The model's square input size.
    keep_probabilities:
        Keep the model-resolution softmax in the prediction.
    """
    output = run_network(prepare_input(volume, input_size))
    return finalize(
        volume,
        output.seg_probs,
        output.slice_logits,
        output.subject_logits,
        keep_probabilities=keep_probabilities,
    )


class PipelineEngine:
    """Base of the staged engines: ``predict`` = :func:`run_pipeline` around ``run_network``.

    Subclasses provide ``run_network``, ``input_size`` and ``description``; only how the network
    executes differs between engines, never the pre- and post-processing.
    """

    description: str
    input_size: int

    def run_network(self, x: np.ndarray) -> NetworkOutput:
        raise NotImplementedError

    def predict(self, volume: Volume, *, keep_probabilities: bool = False) -> Prediction:
        """Segmentation and classification of ``volume`` (see ``InferenceEngine``)."""
        started = time.perf_counter()
        prediction = run_pipeline(
            volume, self.run_network, self.input_size, keep_probabilities=keep_probabilities
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
    pixels_per_slice = np.count_nonzero(labels == HEMORRHAGE, axis=(1, 2))
    return float(np.dot(pixels_per_slice, volume.voxel_volumes_ml()))
