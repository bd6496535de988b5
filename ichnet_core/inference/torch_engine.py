"""The PyTorch reference engine: the network exactly as trained, float32, eval mode.

Other engines are checked against this one. It runs the staged network the way the exported
engines will: ``encode`` and ``decode`` on chunks of ``chunk_slices`` slices (activation memory
does not grow with the series length) and ``recur`` once over the whole series (the ConvLSTM
needs every slice). The skip features of the first chunks are kept between the two passes while
they fit in ``skip_cache_bytes``; later chunks are re-encoded instead of stored, so memory stays
bounded for long series and short series do not pay for the encoder twice.
"""

from __future__ import annotations

import logging
import time
from typing import Final, NamedTuple

import numpy as np
import torch
from torch import Tensor

from ichnet_core.imaging.volume import Volume
from ichnet_core.inference.engine import DEFAULT_CHUNK_SLICES, EngineName
from ichnet_core.inference.pipeline import finalize, prepare_input
from ichnet_core.models.weights import ModelWeights, build_model
from ichnet_core.prediction import Prediction

logger = logging.getLogger(__name__)

#: Skip features kept between the encode and decode passes (beyond this they are recomputed).
DEFAULT_SKIP_CACHE_BYTES: Final[int] = 512 * 2**20
#: Class axis of the segmentation logits ``[N, 3, H, W]``.
_CLASS_DIM: Final[int] = 1


class NetworkOutput(NamedTuple):
    """Raw outputs for one series, at model resolution.

    Attributes
    ----------
    seg_probs:
        ``[S, 3, H, W]`` float32 softmax.
    slice_logits:
        ``[S, 6]`` float32.
    subject_logits:
        ``[6]`` float32.
    """

    seg_probs: np.ndarray
    slice_logits: np.ndarray
    subject_logits: np.ndarray


def _tensor_bytes(tensors: tuple[Tensor, ...]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


class TorchEngine:
    """Runs ICHNet with PyTorch.

    Parameters
    ----------
    weights:
        Verified weights of a model with both branches (the node needs labels and probabilities).
    chunk_slices:
        Slices per encode/decode chunk.
    device:
        Torch device; ``None`` picks CUDA when available, else the CPU.
    skip_cache_bytes:
        Memory for skip features kept between the passes (0: always re-encode).

    Raises
    ------
    ValueError
        A model without the segmentation or classification branch, or ``chunk_slices < 1``.
    """

    name: str = EngineName.TORCH.value

    def __init__(
        self,
        weights: ModelWeights,
        *,
        chunk_slices: int = DEFAULT_CHUNK_SLICES,
        device: str | torch.device | None = None,
        skip_cache_bytes: int = DEFAULT_SKIP_CACHE_BYTES,
    ) -> None:
        config = weights.config
        if not (config.seg_branch and config.cls_branch):
            raise ValueError(
                f"the node needs both branches; weights {weights.path} ({weights.model_name}) have "
                f"seg_branch={config.seg_branch}, cls_branch={config.cls_branch}"
            )
        if chunk_slices < 1:
            raise ValueError(f"chunk_slices must be >= 1, got {chunk_slices}")
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.chunk_slices = chunk_slices
        self.skip_cache_bytes = skip_cache_bytes
        self.weights = weights
        self.model = build_model(weights).to(self.device)
        logger.info(
            "torch engine: model %s (sha256 %s) on %s, %d slices per chunk",
            weights.model_name,
            weights.sha256,
            self.device,
            chunk_slices,
        )

    @property
    def input_size(self) -> int:
        """Square in-plane size the model reads."""
        return self.model.config.input_size

    def run_network(self, x: np.ndarray) -> NetworkOutput:
        """Run the network on a prepared input ``[S, 3, H, W]`` (one series).

        Raises
        ------
        ValueError
            When ``x`` is not ``[S >= 1, 3, H, W]``.
        """
        if x.ndim != 4 or x.shape[0] < 1:
            raise ValueError(f"run_network expects [S>=1, 3, H, W], got shape {x.shape}")
        slices = x.shape[0]
        starts = range(0, slices, self.chunk_slices)
        inputs = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        model = self.model
        with torch.inference_mode():
            bottlenecks: list[Tensor] = []
            cached_skips: list[tuple[Tensor, ...] | None] = []
            cached_bytes = 0
            for start in starts:
                features = model.encode(inputs[start : start + self.chunk_slices].to(self.device))
                bottlenecks.append(features[-1])
                skips = features[:-1]
                if cached_bytes + _tensor_bytes(skips) <= self.skip_cache_bytes:
                    cached_bytes += _tensor_bytes(skips)
                    cached_skips.append(skips)
                else:
                    cached_skips.append(None)
                del features, skips
            seq_out, slice_logits, subject_logits = model.recur(torch.cat(bottlenecks)[None])
            assert slice_logits is not None and subject_logits is not None  # checked in __init__
            del bottlenecks
            seq_out = seq_out[0]
            seg_probs = np.empty((slices, *x.shape[1:]), dtype=np.float32)
            for index, start in enumerate(starts):
                stop = start + self.chunk_slices
                skips = cached_skips[index]
                if skips is None:
                    skips = model.encode(inputs[start:stop].to(self.device))[:-1]
                cached_skips[index] = None  # release as soon as the chunk is decoded
                logits = model.decode(skips, seq_out[start:stop])
                seg_probs[start:stop] = torch.softmax(logits, dim=_CLASS_DIM).cpu().numpy()
        return NetworkOutput(
            seg_probs=seg_probs,
            slice_logits=slice_logits[0].cpu().numpy(),
            subject_logits=subject_logits[0].cpu().numpy(),
        )

    def predict(self, volume: Volume, *, keep_probabilities: bool = False) -> Prediction:
        """Segmentation and classification of ``volume`` (see :class:`InferenceEngine`)."""
        started = time.perf_counter()
        x = prepare_input(volume, self.input_size)
        output = self.run_network(x)
        prediction = finalize(
            volume,
            output.seg_probs,
            output.slice_logits,
            output.subject_logits,
            keep_probabilities=keep_probabilities,
        )
        logger.info(
            "torch engine: series %s, %d slices in %.2f s",
            volume.series_instance_uid,
            volume.num_slices,
            time.perf_counter() - started,
        )
        return prediction
