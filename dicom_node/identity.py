"""Who the node is on the wire: its Implementation Class UID and Implementation Version Name.

Both go into the File Meta of every stored instance and into A-ASSOCIATE negotiation, in both
directions (the SCP and the result sender), so a peer's log names this software, whichever
side opened the association.
"""

from __future__ import annotations

from typing import Final

from dicom_node import __version__

#: Our Implementation Class UID (PS3.7 D.3.3.2), in File Meta and association negotiation.
#: A UUID-derived UID (PS3.5 B.2), fixed once for this implementation.
IMPLEMENTATION_CLASS_UID: Final[str] = "2.25.29882931960475163817570692207701671063"
#: Implementation Version Name (SH, at most 16 characters).
IMPLEMENTATION_VERSION_NAME: Final[str] = f"ICHNET_{__version__}"[:16]
