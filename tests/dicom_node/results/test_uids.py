"""Derived UIDs: valid, deterministic, distinct per role and per input."""

from __future__ import annotations

import dataclasses

import pytest
from pydicom.uid import UID

from dicom_node.results.device import ModelIdentity
from dicom_node.results.uids import ResultUids, derived_uid, segment_tracking_uid

#: PS3.5 9.1: a UID is at most 64 characters.
MAX_UID_LENGTH = 64
MODEL = ModelIdentity("ICHNet", "1.0", "c" * 64, training_data="synthetic")


def test_derived_uid_is_valid_and_depends_only_on_its_parts() -> None:
    uid = derived_uid("1.2.3", "seg")

    assert UID(uid).is_valid and len(uid) <= MAX_UID_LENGTH
    assert derived_uid("1.2.3", "seg") == uid
    assert derived_uid("1.2.3", "sr") != uid
    assert derived_uid("1.2.3seg") != uid


def test_result_uids_are_distinct_and_reproducible() -> None:
    uids = ResultUids.derive("1.2.840.1", MODEL)
    values = list(dataclasses.asdict(uids).values())

    assert len(set(values)) == len(values)
    assert ResultUids.derive("1.2.840.1", MODEL) == uids
    other_model = dataclasses.replace(MODEL, weights_sha256="d" * 64)
    assert ResultUids.derive("1.2.840.1", other_model) != uids
    assert ResultUids.derive("1.2.840.2", MODEL) != uids


def test_segment_tracking_uid_differs_per_segment() -> None:
    assert segment_tracking_uid("2.25.5", 1) != segment_tracking_uid("2.25.5", 2)
    assert segment_tracking_uid("2.25.5", 1) == segment_tracking_uid("2.25.5", 1)


def test_derived_uid_needs_a_part() -> None:
    with pytest.raises(ValueError, match="at least one name part"):
        derived_uid()


def test_new_uids_differ_on_every_call_and_per_version() -> None:
    first = ResultUids.new("1.2.840.1", MODEL, result_version=1)
    again = ResultUids.new("1.2.840.1", MODEL, result_version=1)
    second = ResultUids.new("1.2.840.1", MODEL, result_version=2)
    values = [v for u in (first, again, second) for v in dataclasses.asdict(u).values()]
    assert len(set(values)) == len(values) == 12
    assert all(UID(v).is_valid and len(v) <= MAX_UID_LENGTH for v in values)
    assert ResultUids.derive("1.2.840.1", MODEL, "version-2") != ResultUids.derive(
        "1.2.840.1", MODEL, "version-1"
    )
    with pytest.raises(ValueError, match="start at 1"):
        ResultUids.new("1.2.840.1", MODEL, result_version=0)
