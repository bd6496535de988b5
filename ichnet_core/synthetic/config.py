"""Randomisation ranges of the synthetic head-CT generator.

The defaults describe a realistic, deliberately *diverse* population of non-contrast head CT
series (domain randomisation): a model trained on them is later checked on an independently
written simulator and on real scans, so no single scanner look or head shape may dominate.
Narrow a range only for a test or a figure, never to make training easier.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: Matrix size at which the pixel spacing range is quoted; other matrices scale it by 512/columns
#: so the reconstruction field of view (and hence the head's size in the image) stays realistic.
REFERENCE_MATRIX = 512

FloatRange = tuple[float, float]


def _check_range(name: str, value: FloatRange, low: float, high: float) -> None:
    """Raise ``ValueError`` unless ``low <= value[0] <= value[1] <= high``."""
    if len(value) != 2 or not (low <= value[0] <= value[1] <= high):
        raise ValueError(
            f"SyntheticConfig.{name} must be an ordered (min, max) pair within [{low}, {high}]; "
            f"found {value!r}"
        )


@dataclass(frozen=True)
class SyntheticConfig:
    """Matrix size and randomisation ranges of :func:`ichnet_core.synthetic.generate_case`.

    Every ``(min, max)`` pair is sampled uniformly per case unless its docstring says otherwise.
    Lengths are in mm, densities in Hounsfield units (HU), angles in degrees.

    Attributes
    ----------
    rows, columns:
        Image matrix (256 for training, 512 like most scanners).
    pixel_spacing_at_512_mm:
        Pixel spacing range for a 512 matrix (field of view 205-307 mm); scaled by
        ``512 / columns`` for other matrices.
    slice_spacing_mm:
        Distance between slice centres along the slice normal.
    slice_overlap_probability:
        Chance that SliceThickness differs from the spacing (overlapping or gapped reconstruction).
    gantry_tilt_probability, gantry_tilt_deg:
        Chance and magnitude range of a gantry tilt (either sign).
    head_yaw_deg, head_roll_deg, head_pitch_deg, head_shift_mm:
        Head pose: in-plane rotation (max magnitude), roll (max magnitude), pitch range
        (positive = chin down), in-plane offset from the reconstruction centre (max magnitude).
    head_scale:
        Overall head size factor; each axis is further jittered for ellipticity.
    atrophy:
        0 = young adult brain, 1 = marked atrophy (wide sulci, large ventricles).
    negative_fraction:
        Share of cases without hemorrhage when ``generate_case`` is asked for a random case.
    hemorrhage_volume_ml:
        Range of the total hemorrhage volume; sampled log-uniformly.
    noise_sd_hu:
        Quantum-noise standard deviation in the brain for a 5 mm slice at a 512 matrix; scaled
        by ``sqrt(5 / thickness)`` and by ``512 / columns`` (a coarser pixel averages more).
    psf_sigma_px:
        Gaussian in-plane blur of the reconstruction kernel, in pixels.
    cupping_hu, cupping_mm:
        Brightening of brain at the inner table (residual beam hardening and partial volume of
        the skull cut tangentially), HU at the table and exponential fade length. Scanners
        differ widely: at the vertex the real GE study in ../shared/data is 51-60 HU 2-4 mm
        inside the inner table, 45-56 HU 4-6 mm inside and 36-44 HU 12-20 mm inside. With at
        most 6 HU over 6 mm, a model trained on the generator called that band a 48 mL subdural
        haematoma (docs/results.md).
    streak_probability:
        Chance of beam-hardening streaks and the dark band between the petrous bones.
    incidental_probability:
        Chance of each incidental finding (calcifications, old infarct, lacunes, white matter
        disease, scalp swelling, head holder): the confounders a model must learn to ignore.
    inner_table_band_probability, inner_table_band_hu, inner_table_band_mm:
        Chance, HU at the table and fade length of the bright partial-volume band just inside
        the inner table. The real GE study is 148 HU median 0-2 mm from bone and 50 HU at
        2-4 mm against 36 and 32 in the generator without it, 103 and 49 with the defaults
        (:mod:`.realism` has the table).
    tangential_probability, tangential_hu, tangential_reach_mm:
        Chance, HU at the table and through-plane reach of the partial volume where the skull
        is cut tangentially (vertex, skull-base floor): the real vertex is 138 HU median 2-4 mm
        from bone and 59 HU at 4-8 mm against 30 and 36 without it, 79 and 57 with the
        defaults (55-133 per case at 2-4 mm).
    tangential_patchiness:
        Relative strength (0 uniform, 1 islands) of the smooth random field that modulates it
        (ridged orbital roofs, an uneven vertex).
    strong_streak_probability, strong_streak_gain:
        Chance and factor by which the posterior-fossa streaks and Hounsfield bar are
        strengthened (up to about 200 HU; scanners differ far more than the one real study).
    falx_plaque_probability, falx_plaque_hu:
        Chance and density of 1-4 small calcified falx plaques.
    parasellar_probability, parasellar_hu:
        Chance and density of 2-6 small calcifications around the sella (carotid siphons,
        clinoid tips), where the real study's bright base pixels away from bone are.
    """

    rows: int = 256
    columns: int = 256
    pixel_spacing_at_512_mm: FloatRange = (0.4, 0.6)
    slice_spacing_mm: FloatRange = (2.5, 5.0)
    slice_overlap_probability: float = 0.2
    gantry_tilt_probability: float = 0.3
    gantry_tilt_deg: FloatRange = (5.0, 22.0)
    head_yaw_deg: float = 10.0
    head_roll_deg: float = 5.0
    head_pitch_deg: FloatRange = (-12.0, 18.0)
    head_shift_mm: float = 12.0
    head_scale: FloatRange = (0.9, 1.07)
    atrophy: FloatRange = (0.0, 1.0)
    negative_fraction: float = 0.5
    hemorrhage_volume_ml: FloatRange = (0.3, 80.0)
    noise_sd_hu: FloatRange = (3.0, 10.0)
    psf_sigma_px: FloatRange = (0.35, 0.9)
    cupping_hu: FloatRange = (0.0, 30.0)
    cupping_mm: FloatRange = (4.0, 15.0)
    streak_probability: float = 0.7
    incidental_probability: float = 0.3
    inner_table_band_probability: float = 0.85
    inner_table_band_hu: FloatRange = (60.0, 600.0)
    inner_table_band_mm: FloatRange = (0.4, 1.3)
    tangential_probability: float = 0.85
    tangential_hu: FloatRange = (30.0, 300.0)
    tangential_reach_mm: FloatRange = (1.0, 6.0)
    tangential_patchiness: FloatRange = (0.0, 1.0)
    strong_streak_probability: float = 0.6
    strong_streak_gain: FloatRange = (1.0, 8.0)
    falx_plaque_probability: float = 0.3
    falx_plaque_hu: FloatRange = (100.0, 400.0)
    parasellar_probability: float = 0.5
    parasellar_hu: FloatRange = (150.0, 500.0)

    def __post_init__(self) -> None:
        for name in ("rows", "columns"):
            size = getattr(self, name)
            if not isinstance(size, int) or not 64 <= size <= 1024:
                raise ValueError(
                    f"SyntheticConfig.{name} must be an int in [64, 1024]; found {size!r}"
                )
        _check_range("pixel_spacing_at_512_mm", self.pixel_spacing_at_512_mm, 0.2, 1.0)
        _check_range("slice_spacing_mm", self.slice_spacing_mm, 0.5, 10.0)
        _check_range("gantry_tilt_deg", self.gantry_tilt_deg, 0.0, 30.0)
        _check_range("head_pitch_deg", self.head_pitch_deg, -30.0, 30.0)
        _check_range("head_scale", self.head_scale, 0.7, 1.3)
        _check_range("atrophy", self.atrophy, 0.0, 1.0)
        _check_range("hemorrhage_volume_ml", self.hemorrhage_volume_ml, 0.05, 200.0)
        _check_range("noise_sd_hu", self.noise_sd_hu, 0.0, 40.0)
        _check_range("psf_sigma_px", self.psf_sigma_px, 0.0, 3.0)
        _check_range("cupping_hu", self.cupping_hu, 0.0, 60.0)
        _check_range("cupping_mm", self.cupping_mm, 0.5, 40.0)
        _check_range("inner_table_band_hu", self.inner_table_band_hu, 0.0, 1000.0)
        _check_range("inner_table_band_mm", self.inner_table_band_mm, 0.1, 10.0)
        _check_range("tangential_hu", self.tangential_hu, 0.0, 1000.0)
        _check_range("tangential_reach_mm", self.tangential_reach_mm, 0.1, 20.0)
        _check_range("tangential_patchiness", self.tangential_patchiness, 0.0, 1.0)
        _check_range("strong_streak_gain", self.strong_streak_gain, 1.0, 20.0)
        _check_range("falx_plaque_hu", self.falx_plaque_hu, 0.0, 2000.0)
        _check_range("parasellar_hu", self.parasellar_hu, 0.0, 2000.0)
        for name in (
            "slice_overlap_probability",
            "gantry_tilt_probability",
            "negative_fraction",
            "streak_probability",
            "incidental_probability",
            "inner_table_band_probability",
            "tangential_probability",
            "strong_streak_probability",
            "falx_plaque_probability",
            "parasellar_probability",
        ):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(
                    f"SyntheticConfig.{name} must be a probability in [0, 1]; found {p!r}"
                )
        for name in ("head_yaw_deg", "head_roll_deg", "head_shift_mm"):
            if getattr(self, name) < 0:
                raise ValueError(
                    f"SyntheticConfig.{name} is a magnitude and must be >= 0; found {getattr(self, name)!r}"
                )

    def without_realism(self) -> SyntheticConfig:
        """This config with every :mod:`.realism` effect off: bit for bit the generator before
        them (for before/after comparisons and the pinned cases)."""
        return dataclasses.replace(
            self,
            inner_table_band_probability=0.0,
            tangential_probability=0.0,
            strong_streak_probability=0.0,
            falx_plaque_probability=0.0,
            parasellar_probability=0.0,
        )

    @property
    def pixel_spacing_mm(self) -> FloatRange:
        """Pixel spacing range for this matrix (the 512 range scaled by ``512 / columns``)."""
        factor = REFERENCE_MATRIX / self.columns
        low, high = self.pixel_spacing_at_512_mm
        return (low * factor, high * factor)
