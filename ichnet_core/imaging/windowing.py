"""Hounsfield units -> the model's three-channel window stack.

ICHNet reads each slice through the paper's three CT windows (``ichnet_core.labels.WINDOWS_HU``:
brain, blood/subdural, bone-ish). A window ``[lower, upper]`` maps HU linearly to [0, 1] and clips
outside it, so fresh blood (about 60-80 HU) is bright in the first channel, dense clots and their
edge against bone separate in the second, and the skull is resolved in the third.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from ichnet_core.labels import WINDOWS_HU

#: Channels of the stack, one per window.
NUM_WINDOWS: Final[int] = len(WINDOWS_HU)


def window_stack(hu: np.ndarray) -> np.ndarray:
    """Stack the three windows of ``hu`` as channels, each clipped and scaled to [0, 1].

    Parameters
    ----------
    hu:
        ``[..., H, W]`` Hounsfield units (any real dtype), e.g. one slice or ``[S, H, W]``.

    Returns
    -------
    np.ndarray
        ``[..., 3, H, W]`` float32; channel ``k`` is ``clip((hu - lower_k) / (upper_k - lower_k),
        0, 1)`` in ``WINDOWS_HU`` order.

    Raises
    ------
    ValueError
        When ``hu`` has fewer than two dimensions.
    """
    hu = np.asarray(hu)
    if hu.ndim < 2:
        raise ValueError(f"window_stack needs [..., H, W] Hounsfield units, got shape {hu.shape}")
    out = np.empty((*hu.shape[:-2], NUM_WINDOWS, *hu.shape[-2:]), dtype=np.float32)
    for channel, (lower, upper) in enumerate(WINDOWS_HU):
        target = out[..., channel, :, :]
        np.subtract(hu, lower, out=target, casting="unsafe")
        target *= np.float32(1.0 / (upper - lower))
        np.clip(target, 0.0, 1.0, out=target)
    return out
