"""Fuzzing the C-STORE path: 2000 mutated real and synthetic files, each answered precisely.

A seeded mutator (reproducible: the seed and each input's recipe are in the failure message)
takes real files of ../shared/data (CT, MR, nine transfer syntaxes incl. Deflate, big endian,
JPEG, JPEG 2000, RLE, multi-frame) and small synthetic CT slices, and flips bytes, truncates,
inserts garbage or sets an element's length field huge. pynetdicom sends each result's bytes
exactly as they are (no decoding on the sending side) over a few associations to a real node
SCP on loopback. Every input must be either stored (byte-identical in the spool) or refused
with a specific status (0xA700, 0xA900 or 0xC210 with an Error Comment), never 0xC211 (an
unexpected exception), never without an answer; the node must still answer C-ECHO; and the
spool must hold nothing half-written.

The sending side is pynetdicom's requestor, whose reactor thread can, under load, take a C-STORE
response off the queue before ``send_c_store`` reads it (pynetdicom issue #875, "Received
unexpected C-STORE service message"). When the sender reports no answer, the node's own audit
trail decides: the node must have answered that request (its record is checked like any other
answer); only then is the input counted, and the test continues on a new association.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Final

import pytest
from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pynetdicom import AE, _config
from pynetdicom.association import Association
from pynetdicom.dsutils import split_dataset

from dicom_node.status import StoreStatus
from dicom_node.storage import encode_file_meta
from tests.dicom_node.conftest import NODE_AE, PEER_AE, RunningNode
from tests.dicom_node.dcmtk import echoscu
from tests.dicom_node.instances import ct_slice as synthetic_slice
from tests.dicom_node.instances import dataset_bytes, encode_dataset, file_meta

pytestmark = [pytest.mark.integration, pytest.mark.shared_data]

SEED: Final[int] = 20261204
#: How long the sender waits for an answer before asking the node's audit trail what it said.
LOST_ANSWER_TIMEOUT_S: Final[float] = 15.0
INPUTS: Final[int] = 2000
#: What a refusal may be answered with: each names what was wrong (PS3.4 B.2.3).
SPECIFIC_REFUSALS: Final[frozenset[int]] = frozenset(
    {
        StoreStatus.REFUSED_OUT_OF_RESOURCES,
        StoreStatus.ERROR_DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
        StoreStatus.ERROR_CANNOT_DECODE,
    }
)
#: Real files used as seeds (small ones, so 2000 sends stay quick; two full 512x512 CT slices).
REAL_SEEDS: Final[tuple[str, ...]] = (
    "real/head_ct_ge_tilted/*.dcm:2",
    "real/abdomen_ct_3slice/01.dcm",
    "transfer_syntaxes/pydicom_data/emri_small_*.dcm",
    "transfer_syntaxes/pydicom_data/explicit_VR-UN.dcm",
    "transfer_syntaxes/pydicom_data/JPEG-LL.dcm",
    "transfer_syntaxes/pydicom_data/693_J2KR.dcm",
    "transfer_syntaxes/mr_one_slice_9_syntaxes/[4-9].dcm",
)
SYNTHETIC_SYNTAXES: Final[tuple[str, ...]] = (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    ExplicitVRBigEndian,
    DeflatedExplicitVRLittleEndian,
)


@dataclass(frozen=True)
class Seed:
    """One valid file to mutate: its File Meta (kept intact) and its data set bytes."""

    name: str
    meta: bytes
    sop_class_uid: str
    transfer_syntax: UID
    data: bytes
    #: (offset of a length field, its width in bytes) of each top-level element.
    length_fields: tuple[tuple[int, int], ...]


def _length_fields(data: bytes, syntax: UID) -> tuple[tuple[int, int], ...]:
    """Where the top-level elements' length fields are (not for Deflate: compressed)."""
    if syntax.is_deflated:
        return ()
    fp = BytesIO(data)
    found: list[tuple[int, int]] = []

    def note(tag: BaseTag, vr: str | None, length: int) -> bool:
        width = 2 if not syntax.is_implicit_VR and vr not in EXPLICIT_VR_LENGTH_32 else 4
        found.append((fp.tell() - width, width))
        return False

    read_dataset(fp, syntax.is_implicit_VR, syntax.is_little_endian, stop_when=note)
    return tuple(found)


def _seed_from_file(path: Path, name: str) -> Seed:
    meta, offset = split_dataset(path)
    raw = path.read_bytes()
    syntax = UID(meta.TransferSyntaxUID)
    return Seed(
        name,
        raw[:offset],
        str(meta.MediaStorageSOPClassUID),
        syntax,
        raw[offset:],
        _length_fields(raw[offset:], syntax),
    )


def _seeds(shared_data: Path) -> list[Seed]:
    seeds = []
    for pattern in REAL_SEEDS:
        glob, _, count = pattern.partition(":")
        paths = sorted(shared_data.glob(glob))
        assert paths, f"no seed file matches {glob}"
        for path in paths[: int(count) if count else None]:
            seeds.append(_seed_from_file(path, str(path.relative_to(shared_data))))
    for syntax in SYNTHETIC_SYNTAXES:
        ds = synthetic_slice(transfer_syntax=syntax, rows=16, columns=16)
        data = encode_dataset(ds, syntax)
        seeds.append(
            Seed(
                f"synthetic {UID(syntax).name}",
                encode_file_meta(ds.file_meta),
                str(ds.SOPClassUID),
                UID(syntax),
                data,
                _length_fields(data, UID(syntax)),
            )
        )
    return seeds


Mutation = Callable[[random.Random, Seed, bytearray], str]


def _flip(rng: random.Random, seed: Seed, data: bytearray) -> str:
    # Most bytes are pixels; half the flips go to the first 2 kB, where the header is.
    end = len(data) if rng.random() < 0.5 else min(len(data), 2048)
    spots = [rng.randrange(end) for _ in range(rng.randint(1, 8))]
    for spot in spots:
        data[spot] ^= rng.randint(1, 255)
    return f"flip{spots}"


def _truncate(rng: random.Random, seed: Seed, data: bytearray) -> str:
    cut = rng.randrange(len(data))
    del data[cut:]
    return f"truncate@{cut}"


def _huge_length(rng: random.Random, seed: Seed, data: bytearray) -> str:
    fields = [f for f in seed.length_fields if f[0] + f[1] <= len(data)]
    if not fields:
        return _flip(rng, seed, data)
    offset, width = rng.choice(fields)
    value = rng.choice([b"\xff" * width, b"\xf0\xff\xff\x7f"[:width], rng.randbytes(width)])
    data[offset : offset + width] = value
    return f"length@{offset}={value.hex()}"


def _insert(rng: random.Random, seed: Seed, data: bytearray) -> str:
    spot = rng.randrange(len(data) + 1)
    data[spot:spot] = rng.randbytes(rng.randint(1, 64))
    return f"insert@{spot}"


MUTATIONS: Final[tuple[Mutation, ...]] = (_flip, _truncate, _huge_length, _insert)


def _mutants(seeds: list[Seed], count: int) -> Iterator[tuple[Seed, bytes, str]]:
    rng = random.Random(SEED)
    for index in range(count):
        seed = rng.choice(seeds)
        data = bytearray(seed.data)
        recipe = [rng.choice(MUTATIONS)(rng, seed, data) for _ in range(rng.randint(1, 3))]
        yield seed, bytes(data), f"#{index} {seed.name}: {' '.join(recipe)}"


def _associate(port: int, seeds: list[Seed]) -> Association:
    ae = AE(ae_title=PEER_AE)
    ae.dimse_timeout = LOST_ANSWER_TIMEOUT_S
    for sop_class, syntax in sorted({(s.sop_class_uid, str(s.transfer_syntax)) for s in seeds}):
        ae.add_requested_context(sop_class, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title=NODE_AE)
    assert assoc.is_established
    return assoc


def test_two_thousand_mutated_files_are_stored_or_refused_precisely(
    node: RunningNode, shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pynetdicom sends a file's data set bytes as they are (no decode) with this switch.
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    seeds = _seeds(shared_data)
    outcomes: Counter[str] = Counter()
    expected_spool: dict[Path, bytes] = {}
    path = tmp_path / "mutant.dcm"
    audit = node.config.node.layout.audit_log
    lost = 0
    assoc = _associate(node.port, seeds)
    try:
        for seed, data, recipe in _mutants(seeds, INPUTS):
            path.write_bytes(seed.meta + data)
            stored_before = len(node.stored)
            audited_before = audit.stat().st_size if audit.exists() else 0
            rsp = assoc.send_c_store(path)
            if "Status" in rsp:
                status, comment = int(rsp.Status), str(rsp.get("ErrorComment", ""))
            else:
                # The sender lost the answer (see the module docstring); the node's record says
                # whether it answered and how.
                with audit.open("rb") as trail:
                    trail.seek(audited_before)
                    records = [json.loads(line) for line in trail.read().splitlines()]
                assert len(records) == 1, f"no answer to {recipe}; SEED {SEED}: {records}"
                status, comment = int(str(records[0]["status"]), 16), str(records[0]["reason"])
                lost += 1
                assoc.abort()
                assoc = _associate(node.port, seeds)
            assert status != StoreStatus.ERROR_PROCESSING_FAILURE, (
                f"unexpected exception in the node for {recipe} (see its log); SEED {SEED}"
            )
            if status == StoreStatus.SUCCESS:
                [stored] = node.stored[stored_before:]
                expected_spool[stored.path] = data
                outcomes["stored"] += 1
                continue
            assert status in SPECIFIC_REFUSALS, f"0x{status:04X} for {recipe}"
            assert comment, f"0x{status:04X} without Error Comment: {recipe}"
            assert len(node.stored) == stored_before, f"refused yet stored: {recipe}"
            outcomes[f"0x{status:04X}"] += 1
    finally:
        assoc.release()

    print(
        f"\n{INPUTS} mutated inputs (seed {SEED}, {len(seeds)} seed files): {dict(outcomes)}; "
        f"answers lost by the sending library: {lost}"
    )
    assert lost <= INPUTS // 100, f"{lost} answers lost: more than a rare client race"
    assert sum(outcomes.values()) == INPUTS
    assert outcomes["stored"] > 0 and len(outcomes) >= 3, outcomes  # the mutations bite
    # The node is alive and its spool holds exactly the acknowledged bytes, nothing partial.
    assert echoscu(node.port, PEER_AE, NODE_AE).returncode == 0
    spool = node.store.incoming_dir
    assert sorted(p for p in spool.rglob("*") if p.is_file()) == sorted(expected_spool)
    for stored_path, data in expected_spool.items():
        assert dataset_bytes(stored_path) == data, stored_path
        assert file_meta(stored_path).MediaStorageSOPInstanceUID == stored_path.stem
