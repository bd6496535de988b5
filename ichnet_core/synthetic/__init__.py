"""Synthetic head-CT generator: DICOM CT series from skull base to vertex with ground truth.

No labelled patient data exists in this project, so ICHNet learns from these cases, the demo
sends them to the node and tests build their DICOM with them. The generator randomises anatomy,
hemorrhages, incidental findings and scanner behaviour widely (domain randomisation) so what a
model learns is the appearance and location of blood, not the look of one simulator.

>>> from ichnet_core.synthetic import generate_case, write_series
>>> case = generate_case(7, subtypes=("EDH",))        # doctest: +SKIP
>>> paths = write_series(case, Path("out"))           # doctest: +SKIP

Modules: ``config`` (ranges), ``geometry`` (slices, tilt, pose), ``points``/``shapes``
(evaluation and partial volume), ``anatomy``/``head``/``brain`` (the head), ``hemorrhage``
(lesions), ``incidental`` (confounders), ``realism`` (bright non-blood structures at the
skull: inner-table band, tangential partial volume, strong petrous streaks, falx and parasellar
calcifications, measured on a real study), ``scanner`` (blur, noise, artefacts, storage),
``render`` (chunked rendering), ``case`` (the API), ``dicom`` (CT Image Storage),
``contact_sheet`` (a PNG to look at).
"""

from ichnet_core.synthetic.case import SyntheticCase, generate_case, hemorrhage_volume_ml
from ichnet_core.synthetic.config import SyntheticConfig
from ichnet_core.synthetic.dicom import to_datasets, write_series

__all__ = [
    "SyntheticCase",
    "SyntheticConfig",
    "generate_case",
    "hemorrhage_volume_ml",
    "to_datasets",
    "write_series",
]
