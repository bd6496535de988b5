"""The tables of docs/conformance.md, generated from the code that decides them.

A DICOM Conformance Statement (PS3.2) is only useful if it says what the software does; tables
copied by hand drift as soon as someone adds a transfer syntax or a status. Each table here is
built from the constant or class the node itself uses (the SCP's presentation contexts, the
sender's transfer syntaxes, the refusal classes and their statuses, the config defaults, the
result writers' SOP classes), and lives in the document between ``<!-- conformance:NAME -->``
and ``<!-- /conformance:NAME -->``. ``tests/docs/test_conformance.py`` fails when a block
differs from what this module renders; ``python -m dicom_node.conformance --write`` updates them.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from pydicom.uid import (
    UID,
    Comprehensive3DSRStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    SecondaryCaptureImageStorage,
    SegmentationStorage,
)
from pynetdicom import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from dicom_node.app import ACCEPTED_TRANSFER_SYNTAXES
from dicom_node.config import NodeConfig, Peer, announced_max_pdu
from dicom_node.identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from dicom_node.sender import UNCOMPRESSED_TRANSFER_SYNTAXES
from dicom_node.status import DicomNodeError, StoreStatus

#: The document these tables live in.
DOCUMENT: Final[Path] = Path(__file__).resolve().parents[1] / "docs" / "conformance.md"
_BLOCK = re.compile(
    r"(<!-- conformance:(?P<name>[a-z-]+) -->\n)(?P<body>.*?)(<!-- /conformance:(?P=name) -->)",
    re.S,
)


@dataclass(frozen=True)
class CreatedIod:
    """One kind of object the node creates: its SOP Class, the ``peers[].outputs`` key that
    asks for it, and the IOD's modules with one attribute each that the node fills (the drift
    test checks that a built object carries it)."""

    sop_class_uid: str
    output: str
    modules: tuple[tuple[str, str], ...]


#: What ``dicom_node.results`` writes (SEG: seg.py, SR: sr.py, SC: sc.py), PS3.3 Annex A.
CREATED_IODS: Final[tuple[CreatedIod, ...]] = (
    CreatedIod(
        SegmentationStorage,
        "seg",
        (
            ("Patient", "PatientID"),
            ("General Study", "StudyInstanceUID"),
            ("General Series", "SeriesInstanceUID"),
            ("Segmentation Series", "Modality"),
            ("Frame of Reference", "FrameOfReferenceUID"),
            ("General Equipment", "Manufacturer"),
            ("Enhanced General Equipment", "DeviceSerialNumber"),
            ("General Image", "InstanceNumber"),
            ("Image Pixel", "Rows"),
            ("Segmentation Image", "SegmentSequence"),
            ("Multi-frame Functional Groups", "PerFrameFunctionalGroupsSequence"),
            ("Multi-frame Dimension", "DimensionIndexSequence"),
            ("Common Instance Reference", "ReferencedSeriesSequence"),
            ("SOP Common", "SOPInstanceUID"),
        ),
    ),
    CreatedIod(
        Comprehensive3DSRStorage,
        "sr",
        (
            ("Patient", "PatientID"),
            ("General Study", "StudyInstanceUID"),
            ("SR Document Series", "SeriesInstanceUID"),
            ("General Equipment", "Manufacturer"),
            ("SR Document General", "CompletionFlag"),
            ("SR Document Content", "ContentSequence"),
            ("SOP Common", "SOPInstanceUID"),
        ),
    ),
    CreatedIod(
        SecondaryCaptureImageStorage,
        "sc",
        (
            ("Patient", "PatientID"),
            ("General Study", "StudyInstanceUID"),
            ("General Series", "SeriesInstanceUID"),
            ("General Equipment", "Manufacturer"),
            ("SC Equipment", "ConversionType"),
            ("General Image", "SourceImageSequence"),
            ("Image Pixel", "PhotometricInterpretation"),
            ("SOP Common", "SOPInstanceUID"),
        ),
    ),
)

#: Storage SOP Classes the node analyses (the rest is stored and skipped with a reason).
ANALYSED_SOP_CLASSES: Final[frozenset[str]] = frozenset({CTImageStorage})


def _name(uid: str) -> str:
    return UID(uid).name


def _table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _refusal_classes() -> list[type[DicomNodeError]]:
    found: list[type[DicomNodeError]] = [DicomNodeError]
    for cls in found:
        found.extend(cls.__subclasses__())
    return found


def ae_settings() -> str:
    """The AE's defaults (``dicom_node.config``) and its identity on the wire."""
    config = NodeConfig()
    node = config.node
    rows = [
        ("AE Title", f"`{node.ae_title}`", "`node.ae_title`"),
        ("TCP port", node.port, "`node.port`"),
        (
            "Maximum PDU size received",
            f"{announced_max_pdu(config)} bytes",
            "`node.max_pdu` / `limits.max_pdu_bytes`",
        ),
        ("Maximum concurrent associations", node.max_associations, "`node.max_associations`"),
        ("ARTIM / ACSE timeout", f"{node.acse_timeout_s:g} s", "`node.acse_timeout_s`"),
        ("DIMSE timeout", f"{node.dimse_timeout_s:g} s", "`node.dimse_timeout_s`"),
        ("Network (idle) timeout", f"{node.network_timeout_s:g} s", "`node.network_timeout_s`"),
        ("Implementation Class UID", f"`{IMPLEMENTATION_CLASS_UID}`", "fixed"),
        ("Implementation Version Name", f"`{IMPLEMENTATION_VERSION_NAME}`", "fixed"),
        (
            "Series completion, quiet period",
            f"{config.series.complete_after_s:g} s",
            "`series.complete_after_s`",
        ),
        (
            "Series completion after release",
            f"{config.series.settle_after_release_s:g} s",
            "`series.settle_after_release_s`",
        ),
    ]
    return _table(("Setting", "Default", "Configured by"), rows)


def scp_sop_classes() -> str:
    """SOP Classes the SCP accepts (Verification and every pynetdicom storage context)."""
    rows = [(_name(Verification), f"`{Verification}`", "SCP", "answered")]
    for context in AllStoragePresentationContexts:
        uid = str(context.abstract_syntax)
        if uid in ANALYSED_SOP_CLASSES:
            use = "stored, analysed"
        elif uid == EnhancedCTImageStorage:
            use = "stored, skipped (multi-frame not analysed yet)"
        else:
            use = "stored, skipped (not CT)"
        rows.append((_name(uid), f"`{uid}`", "SCP", use))
    return _table(("SOP Class", "UID", "Role", "What the node does"), rows)


def scp_transfer_syntaxes() -> str:
    """Transfer syntaxes accepted for every storage context (``app.ACCEPTED_TRANSFER_SYNTAXES``)."""
    rows = [(_name(uid), f"`{uid}`") for uid in ACCEPTED_TRANSFER_SYNTAXES]
    return _table(("Transfer Syntax", "UID"), rows)


def scp_statuses() -> str:
    """C-STORE statuses the SCP answers: success and each refusal class's status."""
    rows: dict[int, tuple[str, str, str]] = {
        int(StoreStatus.SUCCESS): (
            "Success",
            f"`0x{int(StoreStatus.SUCCESS):04X}`",
            "written to the spool and fsynced before the answer",
        )
    }
    for cls in _refusal_classes():
        status = cls.status
        doc = (
            "any other failure while storing (internal error, named in the node's log)"
            if cls is DicomNodeError
            else " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        )
        if int(status) not in rows:
            rows[int(status)] = (
                status.name.replace("_", " ").capitalize(),
                f"`0x{int(status):04X}`",
                doc,
            )
        else:
            name, code, text = rows[int(status)]
            rows[int(status)] = (name, code, f"{text} {doc}")
    return _table(("Status", "Code", "When"), [rows[code] for code in sorted(rows)])


def scu_sop_classes() -> str:
    """What the result sender proposes: the created SOP Classes with the uncompressed syntaxes."""
    syntaxes = ", ".join(_name(uid) for uid in UNCOMPRESSED_TRANSFER_SYNTAXES)
    default_outputs = Peer.model_fields["outputs"].default
    rows = [
        (
            _name(iod.sop_class_uid),
            f"`{iod.sop_class_uid}`",
            "SCU",
            syntaxes,
            f"`{iod.output}`" + (" (default)" if iod.output in default_outputs else ""),
        )
        for iod in CREATED_IODS
    ]
    return _table(
        ("SOP Class", "UID", "Role", "Transfer Syntaxes proposed", "`peers[].outputs`"), rows
    )


def created_iods() -> str:
    """The modules of each created IOD."""
    rows = [
        (_name(iod.sop_class_uid), module, f"`{keyword}`")
        for iod in CREATED_IODS
        for module, keyword in iod.modules
    ]
    return _table(("IOD", "Module", "e.g. attribute"), rows)


#: Every generated block, by its name in the document.
BLOCKS: Final = {
    "ae-settings": ae_settings,
    "scp-sop-classes": scp_sop_classes,
    "scp-transfer-syntaxes": scp_transfer_syntaxes,
    "scp-statuses": scp_statuses,
    "scu-sop-classes": scu_sop_classes,
    "created-iods": created_iods,
}


def stale_blocks(text: str) -> list[str]:
    """Names of blocks that are missing from ``text`` or differ from the code's tables."""
    found = {match["name"]: match["body"] for match in _BLOCK.finditer(text)}
    return [name for name, render in BLOCKS.items() if found.get(name) != render()]


def render_document(text: str) -> str:
    """``text`` with every generated block replaced by its current table."""
    return _BLOCK.sub(lambda m: m.group(1) + BLOCKS[m["name"]]() + m.group(4), text)


def main(argv: Sequence[str] | None = None) -> int:
    """Check (default) or ``--write`` the tables of docs/conformance.md."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--write", action="store_true")
    parser.add_argument("--path", type=Path, default=DOCUMENT)
    args = parser.parse_args(argv)
    text = args.path.read_text(encoding="utf-8")
    if args.write:
        args.path.write_text(render_document(text), encoding="utf-8")
    stale = stale_blocks(args.path.read_text(encoding="utf-8"))
    if stale:
        print(f"{args.path}: out of date: {', '.join(stale)} (run with --write)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
