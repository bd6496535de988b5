"""The node's software version, as written into Software Versions of every result object."""

from __future__ import annotations

import importlib.metadata
from typing import Final

import dicom_node

#: Distribution name in pyproject.toml, used to read the installed version.
PACKAGE_NAME: Final[str] = "ichnet-node"


def software_version() -> str:
    """Version of the installed ``ichnet-node`` distribution.

    Falls back to ``dicom_node.__version__`` when the package runs from a source tree that was
    never installed, so an object never carries an empty Software Versions value.
    """
    try:
        return importlib.metadata.version(PACKAGE_NAME)
    except importlib.metadata.PackageNotFoundError:
        return dicom_node.__version__
