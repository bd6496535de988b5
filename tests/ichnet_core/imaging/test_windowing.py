"""The three-window stack: exact values, clipping, shapes and dtype."""

from __future__ import annotations

import numpy as np
import pytest

from ichnet_core.imaging.windowing import NUM_WINDOWS, window_stack
from ichnet_core.labels import WINDOWS_HU


def test_known_values() -> None:
    hu = np.array([[-1000.0, -50.0, 50.0, 150.0], [200.0, 300.0, 450.0, 3000.0]])
    stack = window_stack(hu)
    # Brain window [-50, 150], blood window [100, 300], bone-ish window [250, 450].
    expected = np.array(
        [
            [[0.0, 0.0, 0.5, 1.0], [1.0, 1.0, 1.0, 1.0]],
            [[0.0, 0.0, 0.0, 0.25], [0.5, 1.0, 1.0, 1.0]],
            [[0.0, 0.0, 0.0, 0.0], [0.0, 0.25, 1.0, 1.0]],
        ],
        dtype=np.float32,
    )
    np.testing.assert_allclose(stack, expected, atol=1e-6)
    assert WINDOWS_HU == ((-50.0, 150.0), (100.0, 300.0), (250.0, 450.0))


@pytest.mark.parametrize("shape", [(5, 6), (3, 5, 6), (2, 3, 5, 6)])
def test_shape_dtype_and_range(shape: tuple[int, ...]) -> None:
    rng = np.random.default_rng(0)
    hu = rng.uniform(-2000, 3000, size=shape).astype(np.int16)
    stack = window_stack(hu)
    assert stack.shape == (*shape[:-2], NUM_WINDOWS, *shape[-2:])
    assert stack.dtype == np.float32
    assert stack.min() >= 0.0 and stack.max() <= 1.0
    for channel, (lower, upper) in enumerate(WINDOWS_HU):
        expected = np.clip((hu.astype(np.float64) - lower) / (upper - lower), 0, 1)
        np.testing.assert_allclose(stack[..., channel, :, :], expected, atol=1e-6)


def test_input_is_not_modified() -> None:
    hu = np.full((4, 4), 80.0, dtype=np.float32)
    window_stack(hu)
    assert np.all(hu == 80.0)


def test_rejects_one_dimensional_input() -> None:
    with pytest.raises(ValueError, match=r"\[..., H, W\].*shape \(5,\)"):
        window_stack(np.zeros(5))
