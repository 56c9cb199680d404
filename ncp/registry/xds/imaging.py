"""XDS-I.b metadata of imaging documents with the MCWG keys (MADO Vol 3 App. A, standards digest 3.6).

A study's KOS manifest and its report carry the same search keys: eventCodeList with the acquisition
modalities (DCM), the coarse anatomical region (SNOMED CT, CID IHE-MADO1) and the procedure; a
referenceIdList with every accession number and placer order (with their issuers) and the Study Instance
UID. Code systems are written as the OIDs XDS uses in ``codingScheme``.
"""

from __future__ import annotations

from ncp.codes import (
    ACQUISITION_MODALITIES,
    CATEGORY_MEDICAL_IMAGING,
    DCM,
    DCMUID,
    LOINC,
    SCT,
    TYPE_MANIFEST,
    TYPE_REPORT,
    Code,
)
from ncp.mhd import LATERALITY
from ncp.model import PatientRecord, ReportRecord, StudyRecord
from ncp.registry.xds.ebrim import (
    ACCESSION,
    ORDER,
    STUDY_INSTANCE_UID,
    Coded,
    DocumentEntry,
    SubmissionSet,
    cxi,
)

__all__ = [
    "FORMAT_KOS",
    "FORMAT_PDF",
    "SCHEME_OIDS",
    "coded",
    "manifest_entry",
    "patient_cx",
    "report_entry",
    "source_patient_info",
    "study_event_codes",
    "study_reference_ids",
    "submission_set",
]

# FHIR code system -> the OID XDS writes in codingScheme
SCHEME_OIDS = {
    LOINC: "2.16.840.1.113883.6.1",
    SCT: "2.16.840.1.113883.6.96",
    DCM: "1.2.840.10008.2.16.4",
    DCMUID: "1.2.840.10008.2.6.1",
}
# XDS-I.b formatCode of a KOS manifest is its SOP Class UID (RAD TF-3 4.68.4.1.2.3.2); PDF per IHE's
# format code value set (urn:ihe:rad:PDF, scheme IHE format codes).
FORMAT_KOS = Coded("1.2.840.10008.5.1.4.1.1.88.59", "1.2.840.10008.2.6.1", "Key Object Selection Document")
FORMAT_PDF = Coded("urn:ihe:rad:PDF", "1.3.6.1.4.1.19376.1.2.3", "PDF")
_CONFIDENTIALITY = Coded("N", "2.16.840.1.113883.5.25", "normal")
_FACILITY = Coded("22232009", "2.16.840.1.113883.6.96", "Hospital")
_PRACTICE = Coded("394914008", "2.16.840.1.113883.6.96", "Radiology")


def coded(code: Code) -> Coded:
    return Coded(code.code, SCHEME_OIDS.get(code.system, code.system), code.display)


def patient_cx(patient: PatientRecord) -> str:
    return f"{patient.id}^^^&{patient.issuer}&ISO"


def study_event_codes(study: StudyRecord) -> tuple[Coded, ...]:
    """Modalities, anatomical region, procedures (the study's and each request's, once) and laterality:
    the level-1 keys and the level-2 selection keys (MCWG 2.5, 2.6), as ncp.mhd puts in context.event."""
    modalities = tuple(Coded(m, SCHEME_OIDS[DCM], ACQUISITION_MODALITIES.get(m, m)) for m in study.modalities)
    procedures = dict.fromkeys([study.procedure, *(r.procedure for r in study.requests)])
    laterality = (coded(LATERALITY[study.laterality]),) if study.laterality in LATERALITY else ()
    return (*modalities, coded(study.anatomical_region), *(coded(p) for p in procedures), *laterality)


def source_patient_info(patient: PatientRecord) -> tuple[str, ...]:
    """sourcePatientInfo (ITI TF-3 4.2.3.2.23): what an XDS Document Consumer knows of the patient's
    demographics; the MHD facade answers PDQm from it."""
    return (
        f"PID-3|{patient_cx(patient)}",
        f"PID-5|{patient.family}^{patient.given}",
        f"PID-7|{patient.birth_date}",
        f"PID-8|{patient.sex}",
    )


def study_reference_ids(study: StudyRecord) -> tuple[str, ...]:
    """Accessions and orders with their issuers (m-n, each once) and the Study Instance UID."""
    accessions = dict.fromkeys(cxi(r.accession_number, ACCESSION, r.accession_issuer) for r in study.requests)
    orders = dict.fromkeys(cxi(r.placer_order_number, ORDER, r.placer_issuer) for r in study.requests)
    return (*accessions, *orders, cxi(study.study_instance_uid, STUDY_INSTANCE_UID))


def _entry(
    study: StudyRecord, ids: tuple[str, str], creation_time: str, mime_type: str, title: str, type_code: Code
) -> DocumentEntry:
    """``ids``: (entryUUID, uniqueId)."""
    return DocumentEntry(
        entry_uuid=ids[0],
        unique_id=ids[1],
        mime_type=mime_type,
        title=title,
        creation_time=creation_time,
        patient_id=patient_cx(study.patient),
        source_patient_info=source_patient_info(study.patient),
        class_code=coded(CATEGORY_MEDICAL_IMAGING),
        type_code=coded(type_code),
        format_code=FORMAT_PDF if mime_type == "application/pdf" else FORMAT_KOS,
        confidentiality_code=_CONFIDENTIALITY,
        healthcare_facility_type=_FACILITY,
        practice_setting=_PRACTICE,
        service_start_time=study.date + study.time,
        event_codes=study_event_codes(study),
        reference_ids=study_reference_ids(study),
    )


def manifest_entry(study: StudyRecord, *, entry_uuid: str, creation_time: str) -> DocumentEntry:
    """The DocumentEntry of the study's KOS manifest; its uniqueId is the KOS SOP Instance UID."""
    title = f"Imaging study manifest: {study.description}"
    ids = (entry_uuid, study.manifest_sop_instance_uid)
    return _entry(study, ids, creation_time, "application/dicom", title, TYPE_MANIFEST)


def report_entry(
    report: ReportRecord, *, entry_uuid: str, unique_id: str, creation_time: str
) -> DocumentEntry:
    """The DocumentEntry of a report rendered as PDF, with its study's keys."""
    title = f"Imaging report: {report.study.description}"
    return _entry(report.study, (entry_uuid, unique_id), creation_time, "application/pdf", title, TYPE_REPORT)


def submission_set(
    patient: PatientRecord, *, entry_uuid: str, unique_id: str, source_id: str, submission_time: str
) -> SubmissionSet:
    return SubmissionSet(
        entry_uuid=entry_uuid,
        unique_id=unique_id,
        source_id=source_id,
        patient_id=patient_cx(patient),
        submission_time=submission_time,
        content_type_code=coded(TYPE_MANIFEST),
        title="Imaging documents",
    )
