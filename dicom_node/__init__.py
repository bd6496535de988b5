"""The ICHNet DICOM node: receives head CT by C-STORE, runs ICHNet, sends DICOM SEG + SR back."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
