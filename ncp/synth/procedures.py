"""The imaging procedures the generator performs, as data: codes, regions, series, report texts.

Procedure codes are LOINC radiology codes (LOINC/RSNA Radiology Playbook names). Each procedure
maps to one MCWG coarse anatomical region (MADO CID IHE-MADO1, ``ncp.codes.ANATOMICAL_REGIONS``)
and lists the series a real acquisition of it would produce.
"""

from __future__ import annotations

from dataclasses import dataclass

from ncp.codes import ANATOMICAL_REGIONS, LOINC, SCT, Code

__all__ = [
    "BODY_PART_REGION",
    "COMBINED_CT",
    "COMBINED_CT_REQUESTS",
    "MODALITY_CYCLE",
    "PROCEDURES",
    "REGION_BODY_PART",
    "Procedure",
    "ReportText",
    "SeriesSpec",
    "default_series_spec",
    "region_code",
]

MODALITY_CYCLE = ("CT", "MR", "CR", "US", "MG")


@dataclass(frozen=True)
class SeriesSpec:
    """How one series is acquired; :mod:`ncp.synth.images` turns it into DICOM attributes."""

    description: str
    instances: tuple[int, int] = (3, 6)  # inclusive range of the instance count
    plane: str = "AXIAL"  # CT/MR: AXIAL, SAGITTAL or CORONAL
    thickness: float = 5.0  # CT/MR slice thickness in mm
    sequence: str = ""  # MR: key of images._MR_SEQUENCES
    kernel: str = ""  # CT: convolution kernel
    view: str = ""  # CR: View Position (PA, LL, ...); MG: view (CC, MLO, ML, LM)
    laterality: str | None = None  # MG: laterality of this view's breast (R/L)
    contrast: bool = False


@dataclass(frozen=True)
class ReportText:
    findings: str
    conclusion: str


@dataclass(frozen=True)
class Procedure:
    code: Code
    modality: str
    region: str  # SNOMED CT code, key of ANATOMICAL_REGIONS
    body_part: str  # Body Part Examined (0018,0015), a PS3.16 Annex L term inside ``region``
    series: tuple[SeriesSpec, ...]
    reports: tuple[ReportText, ...]
    laterality: str | None = None  # MCWG 2.6: L, R, B (bilateral) or None (unpaired)


def region_code(sct: str) -> Code:
    meaning, _ = ANATOMICAL_REGIONS[sct]
    return Code(sct, SCT, meaning)


_UPPER_TRUNK, _LOWER_TRUNK, _HEAD_NECK = "67734004", "63337009", "774007"
_UPPER_LIMB, _LOWER_LIMB, _BREAST, _CARDIO = "53120007", "61685007", "76752008", "113257007"

# Body Part Examined is the fine anatomy (PS3.16 Annex L, CID 4031); the MCWG coarse region that
# contains it is the level-1 query key. The coarse region's own term (e.g. UPPERTRUNK) is not
# used in images: dicom3tools does not know those terms, so it cannot tell whether they are paired
# and reports Laterality (0020,0060) as missing.
BODY_PART_REGION: dict[str, str] = {
    "CHEST": _UPPER_TRUNK,
    "ABDOMEN": _LOWER_TRUNK,
    "PELVIS": _LOWER_TRUNK,
    "HEAD": _HEAD_NECK,
    "BRAIN": _HEAD_NECK,
    "NECK": _CARDIO,
    "HEADNECK": _HEAD_NECK,
    "KNEE": _LOWER_LIMB,
    "LEG": _LOWER_LIMB,
    "HAND": _UPPER_LIMB,
    "ARM": _UPPER_LIMB,
    "BREAST": _BREAST,
    "HEART": "80891009",
    "SPINE": "1141981001",
    "WHOLEBODY": "38266002",
}
# For a study known only by its coarse region (an external manifest): a term inside it
REGION_BODY_PART: dict[str, str] = {
    _UPPER_TRUNK: "CHEST",
    _LOWER_TRUNK: "ABDOMEN",
    "38266002": "WHOLEBODY",
    _UPPER_LIMB: "ARM",
    _LOWER_LIMB: "LEG",
    _HEAD_NECK: "HEADNECK",
    _CARDIO: "HEART",
    "80891009": "HEART",
    _BREAST: "BREAST",
    "1141981001": "SPINE",
}

_CT_CHEST = Procedure(
    Code("24627-2", LOINC, "CT Chest"),
    "CT",
    _UPPER_TRUNK,
    "CHEST",
    (
        SeriesSpec("Thorax 1.25mm", thickness=1.25, kernel="LUNG"),
        SeriesSpec("Thorax 5mm", thickness=5.0, kernel="STANDARD"),
    ),
    (
        ReportText(
            "Lungs are clear. No pulmonary nodule, consolidation or pleural effusion. "
            "Mediastinal structures are unremarkable.",
            "No acute intrathoracic abnormality.",
        ),
        ReportText(
            "A 7 mm solid nodule in the right upper lobe. No lymphadenopathy. No pleural effusion.",
            "Solitary 7 mm right upper lobe nodule; follow-up CT in 6 to 12 months is advised.",
        ),
    ),
)
_CT_HEAD = Procedure(
    Code("24725-4", LOINC, "CT Head"),
    "CT",
    _HEAD_NECK,
    "HEAD",
    (
        SeriesSpec("Head 0.625mm", thickness=0.625, kernel="BONE"),
        SeriesSpec("Brain 5mm", thickness=5.0, kernel="SOFT"),
    ),
    (
        ReportText(
            "No intracranial haemorrhage, mass effect or midline shift. Ventricles normal in size.",
            "No acute intracranial abnormality.",
        ),
        ReportText(
            "Small chronic lacunar infarct in the left basal ganglia. No haemorrhage.",
            "Chronic small vessel ischaemic change; no acute finding.",
        ),
    ),
)
# Combined examination of two orders under one accession (MADO 6.X.2.8.1 "2 orders, 1 accession,
# 1 study"): a chest CT and a thoracic aorta CT ordered separately, performed in one contrast run.
COMBINED_CT = Procedure(
    Code("24628-0", LOINC, "CT Chest W contrast IV"),
    "CT",
    _UPPER_TRUNK,
    "CHEST",
    (
        SeriesSpec("Thorax arterial 1.25mm", thickness=1.25, kernel="STANDARD", contrast=True),
        SeriesSpec("Thorax venous 5mm", thickness=5.0, kernel="STANDARD", contrast=True),
    ),
    (
        ReportText(
            "Thoracic aorta of normal calibre without dissection. Lungs clear. No pleural effusion.",
            "Normal contrast-enhanced CT of the chest and thoracic aorta.",
        ),
    ),
)
COMBINED_CT_REQUESTS = (
    Code("24627-2", LOINC, "CT Chest"),
    Code("24545-6", LOINC, "CT Thoracic Aorta W contrast IV"),
)

_MR_BRAIN = Procedure(
    Code("24590-2", LOINC, "MR Brain"),
    "MR",
    _HEAD_NECK,
    "BRAIN",
    (
        SeriesSpec("T1 SAG", plane="SAGITTAL", sequence="T1", thickness=4.0),
        SeriesSpec("T2 AX", plane="AXIAL", sequence="T2", thickness=4.0),
        SeriesSpec("FLAIR AX", plane="AXIAL", sequence="FLAIR", thickness=4.0),
    ),
    (
        ReportText(
            "Normal grey-white matter differentiation. No restricted diffusion. No mass.",
            "Normal MR examination of the brain.",
        ),
        ReportText(
            "Several punctate FLAIR hyperintensities in the periventricular white matter.",
            "Non-specific white matter lesions, most likely of small vessel origin.",
        ),
    ),
)
_MR_KNEE = Procedure(
    Code("24802-1", LOINC, "MR Knee"),
    "MR",
    _LOWER_LIMB,
    "KNEE",
    (
        SeriesSpec("PD FS SAG", plane="SAGITTAL", sequence="PDFS", thickness=3.0),
        SeriesSpec("T1 COR", plane="CORONAL", sequence="T1", thickness=3.0),
        SeriesSpec("PD FS AX", plane="AXIAL", sequence="PDFS", thickness=3.0),
    ),
    (
        ReportText(
            "Horizontal tear of the posterior horn of the medial meniscus. Cruciate ligaments intact.",
            "Medial meniscus tear.",
        ),
        ReportText(
            "Menisci and ligaments intact. Small joint effusion.",
            "No internal derangement.",
        ),
    ),
    laterality="L",
)
_XR_CHEST = Procedure(
    Code("36643-5", LOINC, "XR Chest 2 Views"),
    "CR",
    _UPPER_TRUNK,
    "CHEST",
    (
        SeriesSpec("Chest PA", instances=(1, 1), view="PA"),
        SeriesSpec("Chest lateral", instances=(1, 1), view="LL"),
    ),
    (
        ReportText("Heart size normal. Lungs clear. No pneumothorax.", "Normal chest radiograph."),
        ReportText(
            "Blunting of the right costophrenic angle. Heart size normal.",
            "Small right pleural effusion.",
        ),
    ),
)
_XR_HAND = Procedure(
    Code("24721-3", LOINC, "XR Hand 2 Views"),
    "CR",
    _UPPER_LIMB,
    "HAND",
    (SeriesSpec("Hand PA and oblique", instances=(2, 2), view="PA"),),
    (
        ReportText("Non-displaced fracture of the fifth metacarpal neck.", "Fifth metacarpal neck fracture."),
        ReportText("No fracture or dislocation. Joint spaces preserved.", "Normal hand radiographs."),
    ),
    laterality="R",
)
_US_ABDOMEN = Procedure(
    Code("24558-9", LOINC, "US Abdomen"),
    "US",
    _LOWER_TRUNK,
    "ABDOMEN",
    (SeriesSpec("Abdomen"),),
    (
        ReportText(
            "Liver of normal size and echotexture. Gallbladder without stones. Kidneys normal.",
            "Normal abdominal ultrasound.",
        ),
        ReportText(
            "Multiple echogenic foci with acoustic shadowing in the gallbladder. No wall thickening.",
            "Cholelithiasis without cholecystitis.",
        ),
    ),
)
_US_CAROTID = Procedure(
    Code("24616-5", LOINC, "US Carotid arteries"),
    "US",
    _CARDIO,
    "NECK",
    (SeriesSpec("Carotids duplex"),),
    (
        ReportText(
            "Mild calcified plaque at the right carotid bifurcation without haemodynamic stenosis.",
            "Less than 50 percent stenosis of the right internal carotid artery.",
        ),
    ),
)
_MG_VIEWS_BILATERAL = (
    SeriesSpec("R CC", instances=(1, 1), view="CC", laterality="R"),
    SeriesSpec("L CC", instances=(1, 1), view="CC", laterality="L"),
    SeriesSpec("R MLO", instances=(1, 1), view="MLO", laterality="R"),
    SeriesSpec("L MLO", instances=(1, 1), view="MLO", laterality="L"),
)
_MG_SCREENING = Procedure(
    Code("24606-6", LOINC, "MG Breast Screening"),
    "MG",
    _BREAST,
    "BREAST",
    _MG_VIEWS_BILATERAL,
    (
        ReportText(
            "Scattered fibroglandular densities (ACR B). No mass, distortion or suspicious calcification.",
            "BI-RADS 1: negative.",
        ),
        ReportText(
            "Heterogeneously dense breasts (ACR C). Benign-appearing calcifications on the left.",
            "BI-RADS 2: benign finding.",
        ),
    ),
    laterality="B",
)
_MG_LEFT = Procedure(
    Code("26176-8", LOINC, "MG Breast - left Screening"),
    "MG",
    _BREAST,
    "BREAST",
    (
        SeriesSpec("L CC", instances=(1, 1), view="CC", laterality="L"),
        SeriesSpec("L MLO", instances=(1, 1), view="MLO", laterality="L"),
        SeriesSpec("L ML", instances=(1, 1), view="ML", laterality="L"),
        SeriesSpec("L LM", instances=(1, 1), view="LM", laterality="L"),
    ),
    (
        ReportText(
            "Post-lumpectomy changes in the left upper outer quadrant. No new mass.",
            "BI-RADS 2: stable post-surgical changes.",
        ),
    ),
    laterality="L",
)

PROCEDURES: dict[str, tuple[Procedure, ...]] = {
    "CT": (_CT_CHEST, _CT_HEAD),
    "MR": (_MR_BRAIN, _MR_KNEE),
    "CR": (_XR_CHEST, _XR_HAND),
    "US": (_US_ABDOMEN, _US_CAROTID),
    "MG": (_MG_SCREENING, _MG_LEFT),
}


def default_series_spec(modality: str, description: str) -> SeriesSpec:
    """A spec for a series the catalogue did not make (e.g. one named by an external manifest)."""
    if modality == "MG":
        return SeriesSpec(description, view="CC", laterality="R")
    if modality == "CR":
        return SeriesSpec(description, view="PA")
    if modality == "MR":
        return SeriesSpec(description, sequence="T2")
    return SeriesSpec(description)
