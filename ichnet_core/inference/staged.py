"""The staged execution every engine shares: chunked encoder, whole-series recurrence, chunked decoder.

A whole 512x512 series through the network at once needs more than 24 GB of activations, so no
engine runs it that way. Each engine supplies a :class:`StageRunner` (how to run one stage on its
runtime) and :func:`run_staged` drives them identically:

1. the encoder runs on chunks of ``chunk_slices`` slices; the bottlenecks are kept (they are
   small, 1/64 of a slice's pixels), and the skip features too when the whole series' skips fit
   in ``skip_cache_bytes``. It is all or nothing: keeping the first chunks of a long series
   saved re-encoding a few of its chunks (35 of 300 slices at 256 px) but held the whole budget
   through the recurrence, the job's memory peak (300 slices of the 256 px model,
   ``bench/memory_budget.py``: ONNX Runtime 2094 -> 1902 MiB, torch 1838 -> 1664 MiB);
2. the recurrent stage (bidirectional ConvLSTM + classification heads) runs once over the whole
   series, since every slice's output depends on every other slice;
3. the decoder runs on the same chunks; chunks whose skips were not kept are re-encoded first.
   Each decoded chunk goes into the series' probability array or, given a ``sink``, straight to
   the caller (the pipeline turns it into source-resolution labels at once, so the whole-series
   probabilities, 600 MB for 300 slices of a 256 px model with compartments, never exist).

Memory therefore stays bounded by the chunk size and the skip budget, whatever the slice count,
and short series do not pay for the encoder twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final, Generic, NamedTuple, Protocol, TypeVar

import numpy as np

from ichnet_core.imaging.windowing import NUM_WINDOWS

#: Skip features kept between the encode and decode passes: a series whose skips need more is
#: re-encoded chunk by chunk instead (192 MiB holds a 28-slice series of the 256 px model).
DEFAULT_SKIP_CACHE_BYTES: Final[int] = 192 * 2**20
#: Input layout ``[S, 3, H, W]``.
_INPUT_NDIM: Final[int] = 4

FeatureT = TypeVar("FeatureT")


class NetworkOutput(NamedTuple):
    """Raw outputs for one series, at model resolution.

    Attributes
    ----------
    seg_probs:
        ``[S, 3, H, W]`` float32 softmax; ``[S, 3 + 5, H, W]`` for a model with compartments
        (``ichnet_core.models.ichnet.seg_probabilities``).
    slice_logits:
        ``[S, 6]`` float32.
    subject_logits:
        ``[6]`` float32.
    """

    seg_probs: np.ndarray
    slice_logits: np.ndarray
    subject_logits: np.ndarray


#: Receives each decoded chunk: ``(start, stop, probabilities [stop - start, C, H, W])``.
ChunkSink = Callable[[int, int, np.ndarray], None]


def to_sink(output: NetworkOutput, sink: ChunkSink | None) -> NetworkOutput:
    """``output`` as :func:`run_staged` returns it for ``sink``: an engine that gets the whole
    series' probabilities at once (Triton) hands them over in one call."""
    if sink is None:
        return output
    sink(0, output.seg_probs.shape[0], output.seg_probs)
    return output._replace(seg_probs=output.seg_probs[:0])


class StageRunner(Protocol, Generic[FeatureT]):
    """One runtime's way of running the three stages; ``FeatureT`` is its tensor type.

    Features stay in the runtime's own type (a CUDA tensor stays on the GPU); only the decoder
    output and the logits come back as NumPy arrays.
    """

    def encode(self, x: np.ndarray) -> tuple[FeatureT, ...]:
        """``[n, 3, H, W]`` float32 -> the three skip levels and the bottleneck (finest first)."""
        ...

    def recur(self, bottlenecks: Sequence[FeatureT]) -> tuple[FeatureT, np.ndarray, np.ndarray]:
        """Bottlenecks of consecutive chunks, in order -> ``seq_out [S, ...]`` (runner type),
        ``slice_logits [S, 6]`` and ``subject_logits [6]`` (float32 arrays)."""
        ...

    def decode(
        self, skips: tuple[FeatureT, ...], seq_out: FeatureT, start: int, stop: int
    ) -> np.ndarray:
        """Skips of slices ``start:stop`` and the whole ``seq_out`` -> ``[n, C, H, W]`` float32
        probabilities of those slices (C = 3, or 3 + 5 with compartments)."""
        ...

    def nbytes(self, features: tuple[FeatureT, ...]) -> int:
        """Memory held by ``features`` (for the skip budget)."""
        ...


def check_input(x: np.ndarray) -> None:
    """Raise ``ValueError`` unless ``x`` is a prepared series ``[S >= 1, 3, H, W]``."""
    if x.ndim != _INPUT_NDIM or x.shape[0] < 1 or x.shape[1] != NUM_WINDOWS:
        raise ValueError(f"run_network expects [S>=1, {NUM_WINDOWS}, H, W], got shape {x.shape}")


def run_staged(
    runner: StageRunner[FeatureT],
    x: np.ndarray,
    *,
    chunk_slices: int,
    skip_cache_bytes: int = DEFAULT_SKIP_CACHE_BYTES,
    sink: ChunkSink | None = None,
) -> NetworkOutput:
    """Run the three stages over a prepared series ``x`` ``[S, 3, H, W]``.

    Parameters
    ----------
    runner:
        The engine's stage implementation.
    x:
        Window stack at model resolution, slices in volume order.
    chunk_slices:
        Slices per encoder/decoder call.
    skip_cache_bytes:
        Budget for the whole series' skip features, kept between the passes when they fit
        (0: always re-encode).
    sink:
        Receives each decoded chunk in slice order; the returned ``seg_probs`` then has zero
        slices (``[0, C, H, W]``). ``None`` collects them into ``seg_probs``.

    Raises
    ------
    ValueError
        ``x`` is not ``[S >= 1, 3, H, W]`` or ``chunk_slices < 1``.
    """
    check_input(x)
    if chunk_slices < 1:
        raise ValueError(f"chunk_slices must be >= 1, got {chunk_slices}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    slices = x.shape[0]
    starts = range(0, slices, chunk_slices)
    bottlenecks: list[FeatureT] = []
    cached: list[tuple[FeatureT, ...] | None] = []
    keep_skips = False
    for start in starts:
        *skips, bottleneck = runner.encode(x[start : start + chunk_slices])
        bottlenecks.append(bottleneck)
        if start == 0:  # every slice's skips take the same bytes: the first chunk tells
            per_slice = runner.nbytes(tuple(skips)) / min(chunk_slices, slices)
            keep_skips = per_slice * slices <= skip_cache_bytes
        cached.append(tuple(skips) if keep_skips else None)
        del skips
    seq_out, slice_logits, subject_logits = runner.recur(bottlenecks)
    del bottlenecks
    seg_probs: np.ndarray | None = None
    for index, start in enumerate(starts):
        stop = min(start + chunk_slices, slices)
        kept = cached[index]
        cached[index] = None  # release as soon as the chunk is decoded
        skips_of_chunk = kept if kept is not None else runner.encode(x[start:stop])[:-1]
        decoded = runner.decode(skips_of_chunk, seq_out, start, stop)
        if seg_probs is None:  # channels come from the model: 3 classes (+ compartments)
            kept_slices = 0 if sink is not None else slices
            seg_probs = np.empty((kept_slices, decoded.shape[1], *x.shape[2:]), dtype=np.float32)
        if sink is not None:
            sink(start, stop, decoded)
        else:
            seg_probs[start:stop] = decoded
        del decoded, skips_of_chunk
    assert seg_probs is not None  # at least one chunk: check_input requires S >= 1
    return NetworkOutput(
        seg_probs=seg_probs,
        slice_logits=np.asarray(slice_logits, dtype=np.float32),
        subject_logits=np.asarray(subject_logits, dtype=np.float32),
    )
