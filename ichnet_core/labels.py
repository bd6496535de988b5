"""Label conventions shared by the model, the generator, training and the result writers.

These names are contracts (../shared/DESIGN.md, "Label conventions"): result.json keys, the model's
output order and the training targets all use them, so they are defined once, here.
"""

from __future__ import annotations

from typing import Final

#: Hemorrhage subtypes, always in this order (CPH = intraparenchymal).
SUBTYPES: Final[tuple[str, ...]] = ("CPH", "IVH", "EDH", "SDH", "SAH")

#: Classification outputs of every head: ``any`` followed by the subtypes.
CLASS_NAMES: Final[tuple[str, ...]] = ("any", *SUBTYPES)
NUM_CLASSIFICATION_OUTPUTS: Final[int] = len(CLASS_NAMES)

#: Segmentation classes as in the paper.
NON_BRAIN: Final[int] = 0
BRAIN: Final[int] = 1
HEMORRHAGE: Final[int] = 2
SEGMENTATION_CLASSES: Final[tuple[str, ...]] = ("non-brain", "brain", "hemorrhage")
NUM_SEGMENTATION_CLASSES: Final[int] = len(SEGMENTATION_CLASSES)

#: The paper's three CT windows (lower, upper) in Hounsfield units: brain, blood/subdural, bone-ish.
WINDOWS_HU: Final[tuple[tuple[float, float], ...]] = (
    (-50.0, 150.0),
    (100.0, 300.0),
    (250.0, 450.0),
)

#: Compartment of each hemorrhage voxel (beyond the paper; DESIGN.md "Label conventions"): a
#: compartment map holds 0 for "no hemorrhage / unknown" and ``1 + SUBTYPES.index(name)``.
NO_COMPARTMENT: Final[int] = 0
NUM_COMPARTMENTS: Final[int] = len(SUBTYPES)
