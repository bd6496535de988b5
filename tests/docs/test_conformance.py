"""docs/conformance.md says what the code does: its generated tables match the code's own."""

from __future__ import annotations

from dicom_node.conformance import BLOCKS, DOCUMENT, render_document, stale_blocks


def test_every_generated_table_of_the_conformance_statement_is_current() -> None:
    text = DOCUMENT.read_text(encoding="utf-8")
    assert stale_blocks(text) == [], "run: python -m dicom_node.conformance --write"
    for name in BLOCKS:
        assert f"<!-- conformance:{name} -->" in text


def test_a_table_edited_by_hand_or_left_behind_is_found() -> None:
    text = DOCUMENT.read_text(encoding="utf-8")
    edited = text.replace(
        "| Explicit VR Little Endian |", "| Explicit VR Little Endian (edited) |", 1
    )
    assert edited != text
    assert "scp-transfer-syntaxes" in stale_blocks(edited)
    assert stale_blocks(render_document(edited)) == []
    missing = text.replace("<!-- conformance:scp-statuses -->", "", 1)
    assert "scp-statuses" in stale_blocks(missing)
