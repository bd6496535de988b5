"""Driving an in-process NodeService over DICOM: a non-head series, sending it, waiting.

Shared by the tests that run the whole service (healing, hardening); the ``make_service``
fixture that starts one lives in ``conftest.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

import numpy as np
import pytest
from pydicom import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE

from dicom_node.service import NodeService
from dicom_node.status import StoreStatus
from tests.dicom_node.instances import ct_slice

NODE_AE: Final[str] = "ICHNET"
PACS_AE: Final[str] = "PACS"
#: Busy timeout of the node's queue in these tests (the product default is 10 s).
BUSY_TIMEOUT_S: Final[float] = 0.5
WAIT_S: Final[float] = 60.0


def non_head_series(count: int) -> list[Dataset]:
    """``count`` slices of one series that is no head CT (skipped quickly, no inference)."""
    series_uid = generate_uid()
    slices = []
    for index in range(count):
        ds = ct_slice()
        ds.SeriesInstanceUID = series_uid
        ds.ImagePositionPatient = [0, 0, float(index)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelData = np.zeros((8, 6), np.int16).tobytes()
        slices.append(ds)
    return slices


def send_datasets(service: NodeService, datasets: list[Dataset], calling_ae: str = PACS_AE) -> None:
    """C-STORE ``datasets`` over one association; each must be acknowledged."""
    ae = AE(ae_title=calling_ae)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.dimse_timeout = 60
    assoc = ae.associate("127.0.0.1", service.port, ae_title=NODE_AE)
    assert assoc.is_established
    try:
        for ds in datasets:
            assert assoc.send_c_store(ds).Status == StoreStatus.SUCCESS
    finally:
        assoc.release()


def wait_for(condition: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    """Poll ``condition`` until truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")
