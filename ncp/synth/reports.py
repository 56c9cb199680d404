"""Imaging reports rendered as a small PDF and as a FHIR R4 document Bundle."""

from __future__ import annotations

from typing import Any

from ncp.mhd import patient_reference_id, patient_resource
from ncp.model import ReportRecord

__all__ = ["fhir_report_document", "render_pdf"]


def _lines(report: ReportRecord) -> list[str]:
    study, patient = report.study, report.study.patient
    return [
        f"Imaging report ({report.status})",
        f"Patient: {patient.family} {patient.given}  ID {patient.id}",
        f"Study: {study.procedure.display}  {study.date}",
        f"Study Instance UID: {study.study_instance_uid}",
        f"Accession: {', '.join(sorted({r.accession_number for r in study.requests}))}",
        f"Findings: {report.findings}",
        f"Conclusion: {report.conclusion}",
        f"Author: {report.author}",
    ]


def render_pdf(report: ReportRecord) -> bytes:
    """A one-page PDF 1.4 with a correct cross-reference table (no dependency)."""
    text = "\n".join(
        f"BT /F1 11 Tf 50 {780 - 18 * i} Td ({_pdf_escape(line)}) Tj ET"
        for i, line in enumerate(_lines(report))
    ).encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(text) + text + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


def _pdf_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def fhir_report_document(report: ReportRecord) -> dict[str, Any]:
    """A FHIR R4 document Bundle: Composition + DiagnosticReport + Patient (HL7 EU imaging report shape)."""
    study = report.study
    pid = patient_reference_id(study.patient)
    patient_url, report_url, comp_url = (f"urn:uuid:{_uuid(report.id, k)}" for k in ("pat", "dr", "comp"))
    subject = {"reference": patient_url}
    loinc_report = {"system": "http://loinc.org", "code": "85430-7", "display": "Diagnostic imaging report"}
    study_identifier = {"system": "urn:dicom:uid", "value": f"urn:oid:{study.study_instance_uid}"}
    composition = {
        "resourceType": "Composition",
        "status": report.status,
        "type": {"coding": [loinc_report]},
        "subject": subject,
        "date": report.issued,
        "author": [{"display": report.author}],
        "title": f"{study.procedure.display} report",
        "section": [
            {"title": "Findings", "text": _narrative(report.findings), "entry": [{"reference": report_url}]},
            {"title": "Conclusion", "text": _narrative(report.conclusion)},
        ],
    }
    diagnostic = {
        "resourceType": "DiagnosticReport",
        "status": report.status,
        "code": {"coding": [loinc_report]},
        "subject": subject,
        "issued": report.issued,
        "conclusion": report.conclusion,
        "imagingStudy": [{"identifier": study_identifier, "display": study.procedure.display}],
    }
    patient = {**patient_resource(study.patient), "id": pid}
    return {
        "resourceType": "Bundle",
        "type": "document",
        "identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:uuid:{_uuid(report.id, 'bundle')}"},
        "timestamp": report.issued,
        "entry": [
            {"fullUrl": comp_url, "resource": composition},
            {"fullUrl": patient_url, "resource": patient},
            {"fullUrl": report_url, "resource": diagnostic},
        ],
    }


def _narrative(text: str) -> dict[str, str]:
    safe = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{safe}</div>'}


def _uuid(*parts: str) -> str:
    import hashlib
    import uuid

    return str(uuid.UUID(bytes=hashlib.sha256("|".join(parts).encode()).digest()[:16]))
