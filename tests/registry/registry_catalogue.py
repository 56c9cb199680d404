"""A small hand-built catalogue (no dependency on ncp.synth, written concurrently) and HTTP helpers."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from typing import Any

import httpx

from ncp.codes import LOINC, SCT, Code
from ncp.dicom.uids import deterministic_uid
from ncp.mhd import manifest_document_reference, provide_document_bundle, report_document_reference
from ncp.model import InstanceRecord, PatientRecord, ReportRecord, RequestRecord, SeriesRecord, StudyRecord

HCID = "2.999.250.1"
PATIENT_ISSUER = "2.999.250.2"
ACCESSION_ISSUER = "2.999.250.3"
PLACER_ISSUER = "2.999.250.4"
RLUID = "2.25.1234567890"

ALICE = PatientRecord("FR", "FR-0001", PATIENT_ISSUER, "Martin", "Alice", "19700102", "F")
BOB = PatientRecord("FR", "FR-0002", PATIENT_ISSUER, "Bernard", "Bob", "19851130", "M")

CT_CHEST = Code("24627-2", LOINC, "CT Chest")
MR_BRAIN = Code("24590-2", LOINC, "MR Brain")
XR_KNEE = Code("36574-4", LOINC, "XR Knee")
MG_BREASTS = Code("24606-6", LOINC, "MG Breast screening")
UPPER_TRUNK = Code("67734004", SCT, "Upper trunk")
HEAD_NECK = Code("774007", SCT, "Head and neck")
LOWER_LIMB = Code("61685007", SCT, "Lower limb")
BREAST = Code("76752008", SCT, "Breast")


def _series(study_key: str, modality: str, body_part: str, n: int) -> SeriesRecord:
    instances = tuple(
        InstanceRecord("1.2.840.10008.5.1.4.1.1.2", deterministic_uid(study_key, "sop", i), i + 1)
        for i in range(n)
    )
    return SeriesRecord(
        deterministic_uid(study_key, "series"), modality, 1, f"{modality} series", "20240115", "101500",
        body_part, RLUID, "http://127.0.0.1:1/dicom-web/", instances,
    )  # fmt: skip


def _study(
    key: str,
    patient: PatientRecord,
    requests: tuple[tuple[str, str, Code], ...],
    date: str,
    modalities: tuple[str, ...],
    region: Code,
    procedure: Code,
    laterality: str | None,
) -> StudyRecord:
    return StudyRecord(
        study_instance_uid=deterministic_uid(key, "study"),
        patient=patient,
        requests=tuple(
            RequestRecord(acc, ACCESSION_ISSUER, order, PLACER_ISSUER, proc) for acc, order, proc in requests
        ),
        date=date,
        time="101500",
        description=procedure.display,
        modalities=modalities,
        anatomical_region=region,
        procedure=procedure,
        laterality=laterality,
        institution="Hôpital Test",
        series=(_series(key, modalities[0], "X", 2),),
        manifest_sop_instance_uid=deterministic_uid(key, "kos"),
        manifest_series_instance_uid=deterministic_uid(key, "kos-series"),
    )


# Alice: a chest CT (one order, one accession), a brain MR (one order, two accessions: m-n),
# a left-knee radiograph; Bob: a bilateral mammography.
CT = _study("ct", ALICE, (("ACC-CT-1", "ORD-1", CT_CHEST),), "20240115", ("CT",), UPPER_TRUNK, CT_CHEST, None)
MR = _study(
    "mr", ALICE, (("ACC-MR-1", "ORD-2", MR_BRAIN), ("ACC-MR-2", "ORD-2", MR_BRAIN)), "20240610", ("MR",),
    HEAD_NECK, MR_BRAIN, None,
)  # fmt: skip
XR = _study("xr", ALICE, (("ACC-XR-1", "ORD-3", XR_KNEE),), "20231201", ("CR",), LOWER_LIMB, XR_KNEE, "L")
MG = _study("mg", BOB, (("ACC-MG-1", "ORD-4", MG_BREASTS),), "20240301", ("MG",), BREAST, MG_BREASTS, "B")
STUDIES = (CT, MR, XR, MG)

CT_REPORT = ReportRecord(
    "rep-ct", CT, "final", "No finding.", "Normal chest.", "Dr House", "2024-01-16T09:00:00Z"
)
MR_REPORT = ReportRecord("rep-mr", MR, "preliminary", "Pending.", "Draft.", "Dr Grey", "2024-06-11T09:00:00Z")
REPORTS = {CT.study_instance_uid: CT_REPORT, MR.study_instance_uid: MR_REPORT}


def kos_bytes(study: StudyRecord) -> bytes:
    """Stand-in bytes for the KOS (the registry stores documents opaquely)."""
    return b"DICM-KOS:" + study.manifest_sop_instance_uid.encode()


def sha1_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


def creation(study: StudyRecord) -> str:
    d = study.date
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}T12:00:00Z"


def manifest_doc(
    study: StudyRecord, kos: bytes | None = None
) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    kos = kos if kos is not None else kos_bytes(study)
    doc = manifest_document_reference(
        study, doc_id=f"m-{study.manifest_sop_instance_uid[-8:]}", size=len(kos), sha1_b64=sha1_b64(kos),
        url="urn:placeholder", home_community_id=HCID, creation=creation(study),
    )  # fmt: skip
    return doc, [("application/dicom", kos)]


def report_doc(report: ReportRecord) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """A report as its PDF: one content per DocumentReference (MHD Minimal)."""
    pdf = b"%PDF-1.4 report " + report.id.encode()
    doc = report_document_reference(
        report,
        doc_id=f"r-{report.id}",
        content=("application/pdf", len(pdf), sha1_b64(pdf), "urn:placeholder"),
        home_community_id=HCID,
        creation=creation(report.study),
    )
    return doc, [("application/pdf", pdf)]


def bundle_for(patient: PatientRecord, studies: tuple[StudyRecord, ...] = STUDIES) -> dict[str, Any]:
    docs = []
    for study in (s for s in studies if s.patient == patient):
        docs.append(manifest_doc(study))
        if study.study_instance_uid in REPORTS:
            docs.append(report_doc(REPORTS[study.study_instance_uid]))
    return provide_document_bundle(patient, docs, source_oid=HCID)


@dataclass
class Published:
    """A running registry holding the catalogue above: base URL, a client, and the ids it assigned."""

    base: str  # .../fhir
    client: httpx.Client
    manifests: dict[str, str] = field(default_factory=dict)  # study UID -> DocumentReference id
    reports: dict[str, str] = field(default_factory=dict)  # study UID -> DocumentReference id

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.client.get(f"{self.base}{path}", **kw)

    def post(self, bundle: dict[str, Any]) -> httpx.Response:
        return post_bundle(self.client, self.base, bundle)

    def health(self) -> dict[str, Any]:
        return dict(self.client.get(self.base.removesuffix("/fhir") + "/health").json())

    def search(self, *params: tuple[str, str], status: str = "current") -> httpx.Response:
        query = [*params, ("status", status)] if status else list(params)
        return self.get("/DocumentReference", params=query)

    def ids(self, *params: tuple[str, str], status: str = "current") -> set[str]:
        response = self.search(*params, status=status)
        assert response.status_code == 200, response.text
        return {e["resource"]["id"] for e in response.json().get("entry", [])}


def alice() -> tuple[str, str]:
    return ("patient.identifier", f"urn:oid:{PATIENT_ISSUER}|{ALICE.id}")


def bob() -> tuple[str, str]:
    return ("patient.identifier", f"urn:oid:{PATIENT_ISSUER}|{BOB.id}")


def post_bundle(client: httpx.Client, base: str, bundle: dict[str, Any]) -> httpx.Response:
    return client.post(base, json=bundle, headers={"Content-Type": "application/fhir+json"}, timeout=30)


def assert_r4(resource: dict[str, Any]) -> None:
    """Validate with fhir.resources' R4B models directly (independent of ncp.mhd.validate_resource)."""
    from fhir.resources.R4B import get_fhir_model_class

    get_fhir_model_class(resource["resourceType"]).model_validate(resource)


def entries(bundle: dict[str, Any], resource_type: str | None = None) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in bundle.get("entry", [])
        if resource_type is None or e["resource"]["resourceType"] == resource_type
    ]


def codings(concepts: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(c.get("system", ""), c["code"]) for cc in concepts for c in cc.get("coding", [])]
