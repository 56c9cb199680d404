"""Value sets the testbed uses, as data. Sources: the EU Health Data API (LOINC type 18748-4 for
manifests, 85430-7 for reports; category Medical-Imaging), MADO's KOS format code (the KOS SOP Class
UID), MADO's CID IHE-MADO1 coarse anatomical regions (MCWG 2.1) and DICOM PS3.16 CID 29 modalities.

Coding systems are FHIR URIs; DICOM code scheme designators are given where DICOM uses them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ACQUISITION_MODALITIES",
    "ANATOMICAL_REGIONS",
    "CATEGORY_MEDICAL_IMAGING",
    "DCM",
    "FORMAT_KOS",
    "KOS_SOP_CLASS",
    "LOINC",
    "SCT",
    "TYPE_MANIFEST",
    "TYPE_REPORT",
    "Code",
    "region_by_body_part",
]

LOINC = "http://loinc.org"
SCT = "http://snomed.info/sct"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
DCMUID = "http://dicom.nema.org/resources/ontology/DCMUID"
KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"


@dataclass(frozen=True)
class Code:
    code: str
    system: str
    display: str

    def coding(self) -> dict[str, str]:
        return {"system": self.system, "code": self.code, "display": self.display}

    def token(self) -> str:
        """FHIR token search form ``system|code``."""
        return f"{self.system}|{self.code}"


TYPE_MANIFEST = Code("18748-4", LOINC, "Diagnostic imaging study")
TYPE_REPORT = Code("85430-7", LOINC, "Diagnostic imaging report")
CATEGORY_MEDICAL_IMAGING = Code(
    "Medical-Imaging",
    "http://hl7.eu/fhir/eu-health-data-api/CodeSystem/eehrxf-document-priority-category-cs",
    "Medical imaging",
)
FORMAT_KOS = Code(KOS_SOP_CLASS, DCMUID, "Key Object Selection Document")

# CID IHE-MADO1 "High-Level Anatomic Regions and Systems" (MCWG 2.1): SCT code -> (meaning, body part)
ANATOMICAL_REGIONS: dict[str, tuple[str, str]] = {
    "63337009": ("Lower trunk", "LOWERTRUNK"),
    "38266002": ("Entire body", "WHOLEBODY"),
    "53120007": ("Upper limb", "UPPERLIMB"),
    "61685007": ("Lower limb", "LOWERLIMB"),
    "67734004": ("Upper trunk", "UPPERTRUNK"),
    "774007": ("Head and neck", "HEADNECK"),
    "113257007": ("Cardiovascular system", "CARDIOVASCSYS"),
    "80891009": ("Heart", "HEART"),
    "76752008": ("Breast", "BREAST"),
    "1141981001": ("Vertebral Column", "SPINE"),
}

# CID 29 Acquisition Modality, the subset the generator produces.
ACQUISITION_MODALITIES: dict[str, str] = {
    "CT": "Computed Tomography",
    "MR": "Magnetic Resonance",
    "CR": "Computed Radiography",
    "US": "Ultrasound",
    "MG": "Mammography",
}


def region_by_body_part(body_part: str) -> Code | None:
    for code, (meaning, part) in ANATOMICAL_REGIONS.items():
        if part == body_part:
            return Code(code, SCT, meaning)
    return None
