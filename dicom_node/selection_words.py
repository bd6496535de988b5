"""What series selection reads in free-text headers: words and kernel names, as data.

Scanners and sites fill BodyPartExamined, the descriptions and the ConvolutionKernel with free
text, in the site's language and the vendor's naming. The lists here are what
:mod:`dicom_node.header_evidence` matches; extend them here (or per site with
``selection.head_keywords`` / ``selection.non_head_keywords``) rather than in code.

Word patterns, matched against text that was upper-cased and stripped of accents
("Crâne" -> ``CRANE``, "Schädel" -> ``SCHADEL``) and split into words at every non-letter:

* ``CCT`` a whole word;
* ``KOPF*`` a word that starts with the stem ("KOPF", "KOPFROUTINE");
* ``*HEAD*`` anywhere in the text, for the names scanners glue together ("CTHEADWO").

Kernel names are compared upper case without spaces ("Bone Plus" -> ``BONEPLUS``).
"""

from __future__ import annotations

from typing import Final


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


#: Words that name the head or brain. English and the Latin/Greek stems every language shares
#: (cranium, cerebral, encephalon), German (Schädel, Kopf, Gehirn, CCT = craniale CT), French
#: (crâne, cerveau, tête), Italian (cranio, cervello, testa), Spanish and Portuguese (cráneo,
#: cabeza, cabeça), Dutch (hoofd, schedel, hersenen), Scandinavian and Polish.
HEAD_WORDS: Final[tuple[str, ...]] = _words(
    """
    *HEAD* *BRAIN* *SKULL* *CRANI* *CEREBR* *ENCEPHAL* *ENCEFAL* NEURO* STROKE*
    *SCHADEL* *SCHAEDEL* KOPF* *HIRN* CCT CCCT
    CRANE CERVEAU* TETE
    CERVELLO TESTA
    CRANEO* CABEZA* CABECA
    HOOFD* SCHEDEL* HERSEN* HUVUD* HODE SKALLE* HJARNE* HJERNE* GLOWA MOZG*
    """
)

#: Other body regions (PS3.16 CID 4031 terms and common description words, in the same
#: languages): a series whose headers name one of these and no head word is not a head.
REGION_WORDS: Final[dict[str, tuple[str, ...]]] = {
    "chest": _words(
        "CHEST* THORA* THORAKS TORAC* TORAX LUNG* PULMO* POUMON* POLMON* BRUST* BORST* CTPA"
    ),
    "abdomen": _words(
        """
        ABD* BAUCH* VENTRE ADDOM* BUIK* LIVER* LEBER* FOIE FEGATO HIGADO HEPAT* KIDNEY*
        NIERE* RENAL* REIN REINS PANCREA* PANKREA* COLON* KOLON* ENTEROGRAPH* UROGRA* TAP
        """
    ),
    "pelvis": _words(
        "PELVI* BECKEN* BASSIN BACINO BEKKEN* HIP HIPS HUFTE* HUEFTE* HANCHE* ANCA CADERA*"
    ),
    "spine": _words(
        """
        SPINE* SPINAL* WIRBEL* *WIRBELSAULE* HWS BWS LWS CWS RACHIS* COLONNA COLUMNA LUMB*
        SACR* COCCY* CSPINE LSPINE
        """
    ),
    "neck": _words("NECK* HALS* COU COLLO CUELLO NEK CERVICAL* LARYN* THYR*"),
    "heart and aorta": _words("HEART* CARDI* HERZ* COEUR CUORE CORAZON CORONAR* KORONAR* AORT*"),
    "face, sinuses or ear": _words(
        """
        FACE FACIAL* GESICHT* SINUS SINUSES NNH NASENNEBEN* ORBIT* DENTAL* MANDIB* MAXILL*
        KIEFER* PETROUS* FELSENBEIN* MASTOID*
        """
    ),
    "extremities": _words(
        """
        EXTREMIT* KNEE* KNIE* GENOU* GINOCCHI* RODILLA* SHOULDER* SCHULTER* EPAULE* SPALLA*
        HOMBRO* ELBOW* ELLBOGEN* ELLENBOGEN* COUDE GOMITO* CODO WRIST* HANDGELENK* POIGNET*
        POLSO* MUNECA* HAND HANDS ANKLE* SPRUNGGELENK* CHEVILLE* CAVIGLI* TOBILLO* FOOT FEET
        FUSS* PIED* PIEDE ARM ARMS LEG LEGS BEIN FEMUR* TIBIA* HUMER* UNTERARM* OBERSCHENKEL*
        """
    ),
    "breast": _words("BREAST* MAMMA* SEIN"),
}

#: ImageType values of projection images (PS3.3 C.8.2.1.1.1: ``LOCALIZER`` in value 3).
LOCALIZER_IMAGE_TYPES: Final[frozenset[str]] = frozenset({"LOCALIZER", "SCOUT", "TOPOGRAM"})
#: SeriesDescription words of localizers: GE "Scout", Siemens "Topogram", Philips "Surview",
#: Canon "Scanogram", and the generic names.
LOCALIZER_WORDS: Final[tuple[str, ...]] = _words(
    "SCOUT* TOPOGRAM* TOPO SURVIEW* SCANOGRAM* SCANO LOCALI* PILOT*"
)

#: Soft-tissue (brain) kernels by exact name: GE (STANDARD, SOFT, STND, STD+), Philips (the
#: brain "U" family and the standard letters A-C), generic names.
SOFT_KERNELS: Final[frozenset[str]] = frozenset(
    _words("STANDARD STND STD STD+ SOFT SMOOTH SOFTTISSUE BRAIN NEURO HEAD A B C UA UB UC UD EB")
)
#: Sharp (bone, lung, edge-enhancing) kernels by exact name: GE (BONE, BONEPLUS, LUNG, EDGE,
#: DETAIL, CHEST), Philips (D, E, L and the high-resolution "Y" family), generic names.
SHARP_KERNELS: Final[frozenset[str]] = frozenset(
    _words("BONE BONEPLUS BONE+ HDBONE LUNG EDGE DETAIL SHARP CHEST D E L YA YB YC YD YE YF EC")
)
#: Kernel families with a number, as (regular expression with one number group, highest soft
#: number, lowest sharp number); numbers in between are left to the image check. Canon/Toshiba
#: FC (FC01-FC28 soft, FC30-FC39 head bone, FC50+ lung and bone) is tried before the Siemens
#: pattern (H30s, J40s, Hr38, Br36d soft; H70h, J70h, Hr64, B70f sharp), which it also matches.
NUMBERED_KERNELS: Final[tuple[tuple[str, int, int], ...]] = (
    (r"FC(\d{2})", 29, 30),
    (r"[A-Z]{1,2}(\d{2})[A-Z]?", 49, 60),
)
#: Words inside longer kernel names (United Imaging "H_SOFT_B", "B_SHARP_C", ...).
SOFT_KERNEL_WORDS: Final[tuple[str, ...]] = _words("SOFT* SMOOTH* STANDARD* BRAIN* NEURO*")
SHARP_KERNEL_WORDS: Final[tuple[str, ...]] = _words("BONE* SHARP* LUNG* EDGE* DETAIL*")
