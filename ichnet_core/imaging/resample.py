"""In-plane resizing between the source matrix and the model's square input.

Only the two in-plane axes change; the slice axis is never resampled (the ConvLSTM reads the
slices as acquired, and results map back one-to-one to the source SOP Instances). Non-square
matrices are resized to the square model input and back to their own rows/columns (the aspect
ratio is restored on the way back).

Bilinear interpolation with half-pixel centres (``align_corners=False``), so a round trip keeps
the image where it was. Shrinking uses antialiasing: a 512 -> 256 resize then averages the pixels
it drops instead of skipping them, which keeps thin bleeds and edges from aliasing away.
torch's ``interpolate`` is used because it is multi-threaded and already a dependency.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import torch
import torch.nn.functional as F

#: The last two axes are rows and columns.
_PLANE_DIMS: Final[int] = 2


def resize_planes(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of the last two axes of ``array`` to ``size``.

    Parameters
    ----------
    array:
        ``[..., H, W]`` images or probabilities.
    size:
        Target ``(rows, columns)``.

    Returns
    -------
    np.ndarray
        ``[..., rows, columns]`` float32. When the size already matches, the float32 input is
        returned without a copy.

    Raises
    ------
    ValueError
        When ``array`` has fewer than two axes or ``size`` is not two positive integers.
    """
    array = np.asarray(array, dtype=np.float32)
    if array.ndim < _PLANE_DIMS:
        raise ValueError(f"resize_planes needs [..., H, W], got shape {array.shape}")
    rows, columns = (int(s) for s in size)
    if rows < 1 or columns < 1:
        raise ValueError(f"target size must be two positive integers, got {size}")
    height, width = array.shape[-2:]
    if (height, width) == (rows, columns):
        return array
    planes = torch.from_numpy(np.ascontiguousarray(array)).reshape(-1, 1, height, width)
    shrinking = rows < height or columns < width
    with torch.inference_mode():
        resized = F.interpolate(
            planes, size=(rows, columns), mode="bilinear", align_corners=False, antialias=shrinking
        )
    return resized.reshape(*array.shape[:-2], rows, columns).numpy()


def to_model_size(array: np.ndarray, input_size: int) -> np.ndarray:
    """Resize ``[..., H, W]`` to the model's square ``[..., input_size, input_size]``."""
    return resize_planes(array, (input_size, input_size))


def to_source_size(array: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """Resize model-resolution ``[..., h, w]`` back to the source ``[..., rows, columns]``."""
    return resize_planes(array, (rows, columns))
