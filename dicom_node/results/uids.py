"""UIDs of the result objects: new for every analysis, never reused for other content.

The writers take every UID as a parameter. :meth:`ResultUids.new` makes the UIDs of one analysis
of a series: name-based UIDs of the source series, the weights, the node version, the series'
``result_version`` and a random UUID. The random part is what makes them safe: a second analysis
of the same series (late instances, an operator's re-run, a rebuilt job database that counts
versions from 1 again, another node with the same weights) holds other content, and a PACS that
receives an object under a UID it already has keeps the stale copy or refuses it (0x0111). The
same results are sent under the same UIDs because they are sent from the files written once
(the outbox and the kept copy under ``results/<job>/``), never rebuilt.

A derived UID is ``2.25.`` followed by the integer value of a name-based (SHA-1, version 5) UUID,
the UUID-derived UID form of PS3.5 B.2 and ISO/IEC 9834-8. (pydicom's ``generate_uid`` ignores
its entropy sources under the ``2.25`` root and returns a random UUID, so it cannot be used.)
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final, Protocol

from dicom_node.results.version import software_version

#: Namespace of every name-based UUID the node derives (a fixed, project-specific UUID).
UID_NAMESPACE: Final[uuid.UUID] = uuid.UUID("71105d43-0090-43d1-b7c8-5ef5b15f6efc")
#: Separator of the name parts; a control character cannot occur in a UID or a hex digest.
_PART_SEPARATOR: Final[str] = "\x1f"


def derived_uid(*parts: str) -> str:
    """A ``2.25`` UID determined by ``parts``: equal parts give equal UIDs, others differ.

    Raises
    ------
    ValueError
        When no part is given.
    """
    if not parts:
        raise ValueError("derived_uid needs at least one name part; found none.")
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, _PART_SEPARATOR.join(parts)).int}"


class IdentifiedModel(Protocol):
    """What UID derivation needs of a model: the digest of its weights.

    :class:`~dicom_node.results.device.ModelIdentity` is one; naming only the digest here
    keeps this module below ``device.py``, which derives its Device Observer UID from this one.
    """

    @property
    def weights_sha256(self) -> str: ...


@dataclass(frozen=True)
class ResultUids:
    """Series and SOP Instance UIDs of the SEG and the SR made for one source series."""

    seg_series_instance_uid: str
    seg_sop_instance_uid: str
    sr_series_instance_uid: str
    sr_sop_instance_uid: str

    @classmethod
    def new(
        cls, source_series_instance_uid: str, model: IdentifiedModel, result_version: int
    ) -> ResultUids:
        """Fresh UIDs for one analysis: :meth:`derive` with the version and a random UUID as
        further parts (see the module docstring)."""
        if result_version < 1:
            raise ValueError(f"result versions start at 1, got {result_version}")
        return cls.derive(
            source_series_instance_uid,
            model,
            f"version-{result_version}",
            uuid.uuid4().hex,
        )

    @classmethod
    def derive(
        cls, source_series_instance_uid: str, model: IdentifiedModel, *further: str
    ) -> ResultUids:
        """The UIDs these inputs determine; tests and tools that need reproducible objects
        use it directly, the node uses :meth:`new`.

        Parameters
        ----------
        source_series_instance_uid:
            Series Instance UID of the analysed CT series.
        model:
            The model whose output the objects carry; other weights give other UIDs, and so
            does another node version.
        further:
            More distinguishing parts (:meth:`new`: the result version and a random UUID).

        Returns
        -------
        ResultUids
            Four distinct UIDs.
        """
        base = (source_series_instance_uid, model.weights_sha256, software_version(), *further)
        return cls(
            seg_series_instance_uid=derived_uid(*base, "seg-series"),
            seg_sop_instance_uid=derived_uid(*base, "seg-instance"),
            sr_series_instance_uid=derived_uid(*base, "sr-series"),
            sr_sop_instance_uid=derived_uid(*base, "sr-instance"),
        )


def segment_tracking_uid(seg_sop_instance_uid: str, segment_number: int) -> str:
    """Tracking UID of one segment, derived from its SEG instance and segment number.

    The SEG's segment and the SR measurement group that describes it share this UID, which is
    how TID 1500 consumers link a measurement to its region across objects.
    """
    return derived_uid(seg_sop_instance_uid, "segment", str(segment_number))
