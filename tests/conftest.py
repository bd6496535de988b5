"""Fixtures shared by the whole suite."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

#: Real test files live beside the project (../shared/data); a user's clone may not have them.
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; skips the test with the reason when the folder is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(
            f"real DICOM test data not found at {SHARED_DATA} (only CI and dev checkouts have ../shared)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def head_ct_dir(shared_data: Path) -> Path:
    """The real 28-slice tilted GE head CT study."""
    return shared_data / "real" / "head_ct_ge_tilted"


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def engine_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``model.cache_dir`` for every node of the session: ``engine: auto`` exports the ONNX
    graphs and measures the engines once, not once per test."""
    return tmp_path_factory.mktemp("engine-cache")
