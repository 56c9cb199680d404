"""Imaging reports rendered as a small PDF 1.4 (written by hand) and as a FHIR R4 document Bundle.

Reports and manifests are separate documents (HL7 Europe imaging-manifest IG, MCWG): the report names
the study by its Study Instance UID, accession(s) and placer order(s), never by image locations.
"""

from __future__ import annotations

import hashlib
import textwrap
import uuid
from typing import Any

from ncp.codes import LOINC, TYPE_REPORT, Code
from ncp.dicom.uids import deterministic_uid
from ncp.mhd import patient_resource
from ncp.model import ReportRecord, StudyRecord

__all__ = ["fhir_report_document", "render_pdf", "report_lines"]

_PAGE_W, _PAGE_H, _MARGIN = 595, 842, 56  # A4 in points
_LEADING = 15
_WRAP = 88  # characters per line at 10.5 pt Helvetica on A4 with these margins
_SECTION_FINDINGS = Code("18782-3", LOINC, "Radiology Study observation (narrative)")
_SECTION_IMPRESSION = Code("19005-8", LOINC, "Radiology Imaging study [Impression] (narrative)")
_CATEGORY_RADIOLOGY = (
    Code("LP29684-5", LOINC, "Radiology"),
    Code("RAD", "http://terminology.hl7.org/CodeSystem/v2-0074", "Radiology"),
)
_RFC3986 = "urn:ietf:rfc:3986"
_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


# --------------------------------------------------------------------------- text


def _date(d: str) -> str:
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}" if len(d) == 8 else d


def _datetime(d: str, t: str) -> str:
    return f"{_date(d)}T{t[:2]}:{t[2:4]}:{t[4:6]}Z" if len(d) == 8 and len(t) >= 6 else _date(d)


def _laterality(study: StudyRecord) -> str:
    return {"L": " (left)", "R": " (right)", "B": " (bilateral)"}.get(study.laterality or "", "")


def report_lines(report: ReportRecord) -> list[tuple[str, str]]:
    """The report as (style, text) lines; style is ``title``, ``heading``, ``text`` or ``blank``."""
    study, patient = report.study, report.study.patient
    accessions = ", ".join(dict.fromkeys(r.accession_number for r in study.requests)) or "-"
    orders = ", ".join(dict.fromkeys(r.placer_order_number for r in study.requests)) or "-"
    validated = "validated" if report.status == "final" else "not yet validated"
    when = f"{_date(study.date)} {study.time[:2]}:{study.time[2:4]}"
    lines = [
        ("title", "Imaging report"),
        ("text", study.institution),
        ("blank", ""),
        ("text", f"Patient: {patient.family.upper()} {patient.given}    ID: {patient.id}"),
        ("text", f"Issuer: {patient.issuer}    Born: {_date(patient.birth_date)}    Sex: {patient.sex}"),
        ("text", f"Study: {study.description}    Date: {when}"),
        ("text", f"Procedure: {study.procedure.display}{_laterality(study)} [{study.procedure.code}]"),
        ("text", f"Accession: {accessions}    Order: {orders}"),
        ("text", f"Study Instance UID: {study.study_instance_uid}"),
        ("blank", ""),
        ("heading", "Findings"),
        *(("text", line) for line in textwrap.wrap(report.findings, _WRAP)),
        ("blank", ""),
        ("heading", "Conclusion"),
        *(("text", line) for line in textwrap.wrap(report.conclusion, _WRAP)),
        ("blank", ""),
        ("text", f"Status: {report.status} ({validated})"),
        ("text", f"Author: {report.author}    Issued: {report.issued}"),
    ]
    return lines


# --------------------------------------------------------------------------- PDF


def _pdf_string(text: str) -> bytes:
    """A PDF literal string in WinAnsiEncoding (ISO 32000-1 7.3.4.2, Annex D); others become '?'."""
    raw = text.encode("cp1252", "replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _page_stream(lines: list[tuple[str, str]]) -> bytes:
    fonts = {"title": b"/F2 16 Tf", "heading": b"/F2 12 Tf", "text": b"/F1 10.5 Tf"}
    out = [b"BT", b"%d TL" % _LEADING, b"%d %d Td" % (_MARGIN, _PAGE_H - _MARGIN)]
    for style, text in lines:
        out += [b"T*"] if style == "blank" else [fonts[style], _pdf_string(text) + b" Tj", b"T*"]
    out.append(b"ET")
    return b"\n".join(out)


def _pdf_date(iso: str) -> bytes:
    digits = "".join(ch for ch in iso if ch.isdigit())[:14].ljust(14, "0")
    return f"(D:{digits}Z)".encode()


def render_pdf(report: ReportRecord) -> bytes:
    """The report as a PDF 1.4 file with a correct cross-reference table; deterministic bytes."""
    lines = report_lines(report)
    per_page = (_PAGE_H - 2 * _MARGIN) // _LEADING
    pages = [lines[i : i + per_page] for i in range(0, len(lines), per_page)]
    first_page = 6  # objects 1-5: catalog, pages, two fonts, info; then (page, contents) pairs
    kids = b" ".join(b"%d 0 R" % (first_page + 2 * i) for i in range(len(pages)))
    title = f"Imaging report {report.study.procedure.display}"
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>" % (kids, len(pages)),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
        b"<< /Title %s /Author %s /Producer (xcwado-testbed ncp.synth) /CreationDate %s >>"
        % (_pdf_string(title), _pdf_string(report.author), _pdf_date(report.issued)),
    ]
    for i, page in enumerate(pages):
        stream = _page_stream(page)
        contents = first_page + 2 * i + 1
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> >>" % (_PAGE_W, _PAGE_H, contents)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    return _pdf_file(objects, hashlib.md5(report.id.encode()).hexdigest().upper().encode())


def _pdf_file(objects: list[bytes], file_id: bytes) -> bytes:
    """Header, numbered objects, xref table of 20-byte entries, trailer (ISO 32000-1 7.5)."""
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")  # binary marker comment (7.5.2)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R /ID [<%s> <%s>] >>\n" % (
        len(objects) + 1,
        file_id,
        file_id,
    )
    out += b"startxref\n%d\n%%%%EOF\n" % xref
    return bytes(out)


# --------------------------------------------------------------------------- FHIR


def _uuid(*parts: str) -> str:
    return str(uuid.UUID(bytes=hashlib.sha256("|".join(parts).encode()).digest()[:16]))


def _cc(*codes: Code, text: str | None = None) -> dict[str, Any]:
    concept: dict[str, Any] = {"coding": [c.coding() for c in codes if c.code]}
    if text:
        concept["text"] = text
    return concept


def _narrative(*paragraphs: str) -> dict[str, str]:
    body = "".join(
        "<p>" + p.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") + "</p>" for p in paragraphs
    )
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


def _practitioner(pid: str, author: str) -> dict[str, Any]:
    words = author.split()
    name: dict[str, Any] = {"text": author}
    if len(words) >= 3 and words[0] in ("Dr", "Dr."):
        name |= {"prefix": [words[0]], "given": [words[1]], "family": " ".join(words[2:])}
    return {"resourceType": "Practitioner", "id": pid, "name": [name]}


def _service_requests(study: StudyRecord) -> list[dict[str, Any]]:
    """basedOn: the placer orders and accessions, by identifier (MCWG targeted queries)."""
    refs: list[dict[str, Any]] = []
    for value, issuer, kind, display in [
        *((r.placer_order_number, r.placer_issuer, "PLAC", "Placer Identifier") for r in study.requests),
        *((r.accession_number, r.accession_issuer, "ACSN", "Accession ID") for r in study.requests),
    ]:
        identifier: dict[str, Any] = {"type": _cc(Code(kind, _V2_0203, display)), "value": value}
        if issuer:
            identifier["system"] = f"urn:oid:{issuer}"
        ref = {"type": "ServiceRequest", "identifier": identifier}
        if value and ref not in refs:
            refs.append(ref)
    return refs


def fhir_report_document(report: ReportRecord) -> dict[str, Any]:
    """A FHIR R4 document Bundle (Composition first, then DiagnosticReport, Patient, Practitioner,
    Organization); the ImagingStudy is referenced by its Study Instance UID identifier."""
    study = report.study
    ids = {k: _uuid(report.id, k) for k in ("bundle", "composition", "report", "patient", "author", "org")}
    url = {k: f"urn:uuid:{v}" for k, v in ids.items()}
    who = study.patient
    subject = {"reference": url["patient"], "display": f"{who.family.upper()} {who.given}"}
    author = {"reference": url["author"], "display": report.author}
    procedure = _cc(study.procedure, text=study.procedure.display + _laterality(study))
    composition: dict[str, Any] = {
        "resourceType": "Composition",
        "id": ids["composition"],
        "identifier": {"system": _RFC3986, "value": url["composition"]},
        "status": report.status,
        "type": _cc(TYPE_REPORT),
        "category": [_cc(*_CATEGORY_RADIOLOGY)],
        "subject": subject,
        "date": report.issued,
        "author": [author],
        "title": f"Imaging report: {study.procedure.display}{_laterality(study)}",
        "custodian": {"reference": url["org"], "display": study.institution},
        "event": [{"code": [procedure], "period": {"start": _datetime(study.date, study.time)}}],
        "section": [
            {
                "title": "Findings",
                "code": _cc(_SECTION_FINDINGS),
                "text": _narrative(report.findings),
                "entry": [{"reference": url["report"]}],
            },
            {"title": "Conclusion", "code": _cc(_SECTION_IMPRESSION), "text": _narrative(report.conclusion)},
        ],
    }
    if report.status == "final":
        composition["attester"] = [{"mode": "legal", "time": report.issued, "party": author}]
    diagnostic = {
        "resourceType": "DiagnosticReport",
        "id": ids["report"],
        "text": _narrative(report.findings, report.conclusion),
        "identifier": [
            {"system": _RFC3986, "value": f"urn:oid:{deterministic_uid('imaging-report', report.id)}"}
        ],
        "basedOn": _service_requests(study),
        "status": report.status,
        "category": [_cc(*_CATEGORY_RADIOLOGY)],
        "code": procedure,
        "subject": subject,
        "effectiveDateTime": _datetime(study.date, study.time),
        "issued": report.issued,
        "performer": [{"reference": url["org"], "display": study.institution}],
        "resultsInterpreter": [author],
        "imagingStudy": [
            {
                "type": "ImagingStudy",
                "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study.study_instance_uid}"},
                "display": study.description,
            }
        ],
        "conclusion": report.conclusion,
    }
    patient = {**patient_resource(study.patient), "id": ids["patient"]}
    organization = {"resourceType": "Organization", "id": ids["org"], "name": study.institution}
    entries = [
        (url["composition"], composition),
        (url["report"], diagnostic),
        (url["patient"], patient),
        (url["author"], _practitioner(ids["author"], report.author)),
        (url["org"], organization),
    ]
    return {
        "resourceType": "Bundle",
        "id": ids["bundle"],
        "identifier": {"system": _RFC3986, "value": url["bundle"]},
        "type": "document",
        "timestamp": report.issued,
        "entry": [{"fullUrl": full, "resource": resource} for full, resource in entries],
    }
