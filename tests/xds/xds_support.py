"""A small imaging catalogue, the official schemas, and a SOAP client that reads answers on its own.

Answers are read here with the standard library's MIME parser and a plain lxml parse, not with
ncp.soapcore, so that a fault in our MTOM writer cannot be hidden by the same fault in our reader.
"""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from hypothesis import strategies as st
from lxml import etree

from ncp.codes import LOINC, SCT, Code
from ncp.dicom.kos import build_manifest, to_part10
from ncp.dicom.uids import deterministic_uid
from ncp.model import InstanceRecord, PatientRecord, ReportRecord, RequestRecord, SeriesRecord, StudyRecord
from ncp.registry.xds import iti18, iti41, iti43
from ncp.registry.xds.ebrim import DocumentEntry
from ncp.registry.xds.imaging import manifest_entry, report_entry, submission_set
from ncp.soapcore import NS, mtom_message, soap_message
from ncp.synth.reports import render_pdf

HCID = "2.999.250.1"
REPOSITORY = "2.999.250.10"
PATIENT_ISSUER = "2.999.250.2"
ACCESSION_ISSUER = "2.999.250.3"
PLACER_ISSUER = "2.999.250.4"
SCHEMAS = Path(__file__).parent.parent / "data" / "xds-schemas"
WSA = NS["wsa"]
SOAP = NS["s"]
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
IHE = "urn:ihe:iti:xds-b:2007"
XOP = NS["xop"]

ALICE = PatientRecord("FR", "FR-0001", PATIENT_ISSUER, "Martin", "Alice", "19700102", "F")
CT_CHEST = Code("24627-2", LOINC, "CT Chest")
MR_BRAIN = Code("24590-2", LOINC, "MR Brain")
UPPER_TRUNK = Code("67734004", SCT, "Upper trunk")
HEAD_NECK = Code("774007", SCT, "Head and neck")


def _study(
    key: str, modality: str, region: Code, procedure: Code, requests: tuple[tuple[str, str], ...]
) -> StudyRecord:
    instances = tuple(
        InstanceRecord("1.2.840.10008.5.1.4.1.1.2", deterministic_uid(key, "sop", i), i + 1) for i in range(2)
    )
    series = SeriesRecord(
        deterministic_uid(key, "series"), modality, 1, f"{modality} series", "20240115", "101500", "CHEST",
        "2.25.1234567890", "http://127.0.0.1:1/dicom-web/", instances,
    )  # fmt: skip
    return StudyRecord(
        study_instance_uid=deterministic_uid(key, "study"),
        patient=ALICE,
        requests=tuple(RequestRecord(a, ACCESSION_ISSUER, o, PLACER_ISSUER, procedure) for a, o in requests),
        date="20240115",
        time="101500",
        description=procedure.display,
        modalities=(modality,),
        anatomical_region=region,
        procedure=procedure,
        laterality=None,
        institution="Hôpital Test",
        series=(series,),
        manifest_sop_instance_uid=deterministic_uid(key, "kos"),
        manifest_series_instance_uid=deterministic_uid(key, "kos-series"),
    )


# A chest CT (one order, one accession) and a brain MR (one order, two accessions: m-n)
CT = _study("ct", "CT", UPPER_TRUNK, CT_CHEST, (("ACC-CT-1", "ORD-1"),))
MR = _study("mr", "MR", HEAD_NECK, MR_BRAIN, (("ACC-MR-1", "ORD-2"), ("ACC-MR-2", "ORD-2")))
CT_REPORT = ReportRecord(
    "rep-ct", CT, "final", "No finding.", "Normal chest.", "Dr House", "2024-01-16T09:00:00Z"
)


@dataclass
class Published:
    """What a test published: each DocumentEntry with its bytes, by uniqueId."""

    documents: dict[str, tuple[DocumentEntry, bytes]] = field(default_factory=dict)


def study_documents(
    study: StudyRecord, report: ReportRecord | None = None
) -> list[tuple[DocumentEntry, bytes]]:
    """The study's KOS manifest (MADO encoding) and, when given, its report as PDF."""
    kos = to_part10(build_manifest(study, encoding="MADO"))
    docs = [
        (
            manifest_entry(
                study, entry_uuid=f"Manifest-{study.series[0].modality}", creation_time="20240115120000"
            ),
            kos,
        )
    ]
    if report is not None:
        entry = report_entry(
            report, entry_uuid=f"Report-{report.id}", unique_id=deterministic_uid(report.id, "pdf"),
            creation_time="20240116090000",
        )  # fmt: skip
        docs.append((entry, render_pdf(report)))
    return docs


def submission_request(
    documents: list[tuple[DocumentEntry, bytes]], *, mtom: bool = True, patient: PatientRecord = ALICE
) -> tuple[etree._Element, list[tuple[str, bytes]]]:
    key = "|".join(e.unique_id for e, _ in documents)
    ss = submission_set(
        patient, entry_uuid="SubmissionSet01", unique_id=deterministic_uid(key, "ss"),
        source_id=HCID, submission_time="20240116100000",
    )  # fmt: skip
    return iti41.provide_and_register_request(ss, documents, mtom=mtom)


# -- the official schemas --------------------------------------------------------------------------
def xds_schema() -> etree.XMLSchema:
    """IHE XDS.b's schema with the OASIS ebRS 3.0 rs, lcm, query and ebRIM 3.0 schemas it imports."""
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "schema" / "IHE" / "IHEXDSB.xsd")))


def assert_valid(
    schema: etree.XMLSchema, element: etree._Element, parts: dict[str, bytes] | None = None
) -> None:
    """Validate ``element`` as the XOP infoset it stands for: each xop:Include replaced by its part's
    base64 (XOP 1.0 3.2), then against the schema."""
    doc = copy.deepcopy(element)
    for include in list(doc.iter(f"{{{XOP}}}Include")):
        parent = include.getparent()
        assert parent is not None
        parent.remove(include)
        parent.text = base64.b64encode((parts or {})[include.get("href", "")[4:]]).decode()
    tree = etree.ElementTree(doc)
    assert schema.validate(tree), schema.error_log.filter_from_errors()


# -- a SOAP client -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    envelope: etree._Element
    parts: dict[str, bytes]

    @property
    def body(self) -> etree._Element:
        found = self.envelope.find(f"{{{SOAP}}}Body")
        assert found is not None
        return found[0]

    def header(self, local: str) -> str | None:
        found = self.envelope.find(f"{{{SOAP}}}Header/{{{WSA}}}{local}")
        return found.text if found is not None else None

    def fault_subcode(self) -> str | None:
        found = self.body.find(f"{{{SOAP}}}Code/{{{SOAP}}}Subcode/{{{SOAP}}}Value")
        return found.text if found is not None else None

    def errors(self) -> list[dict[str, str]]:
        return [dict(e.attrib) for e in self.body.iter(f"{{{RS}}}RegistryError")]

    @property
    def status_value(self) -> str | None:
        """The status of a RetrieveDocumentSetResponse's RegistryResponse."""
        return self.body.find(f"{{{RS}}}RegistryResponse").get("status")  # type: ignore[union-attr]

    def documents(self) -> dict[str, bytes]:
        """Each DocumentResponse's bytes by DocumentUniqueId, through its xop:Include."""
        found = {}
        for doc in self.body.iterfind(f"{{{IHE}}}DocumentResponse"):
            href = doc.find(f"{{{IHE}}}Document/{{{XOP}}}Include").get("href")  # type: ignore[union-attr]
            found[doc.findtext(f"{{{IHE}}}DocumentUniqueId") or ""] = self.parts[href[4:]]  # type: ignore[index]
        return found

    def document_field(self, local: str) -> set[str | None]:
        return {d.findtext(f"{{{IHE}}}{local}") for d in self.body.iterfind(f"{{{IHE}}}DocumentResponse")}


def read_answer(response: httpx.Response) -> Answer:
    content_type = response.headers.get("content-type", "")
    if not content_type.startswith("multipart/related"):
        return Answer(response.status_code, content_type, etree.fromstring(response.content), {})
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + response.content)
    assert not message.defects, message.defects  # a missing closing boundary is a defect here
    parts = list(message.iter_parts())
    attachments = {str(p["Content-ID"]).strip("<>"): p.get_payload(decode=True) for p in parts[1:]}
    root = parts[0].get_payload(decode=True)
    assert isinstance(root, bytes)
    return Answer(response.status_code, content_type, etree.fromstring(root), attachments)  # type: ignore[arg-type]


def post(
    http: httpx.Client,
    url: str,
    body: etree._Element,
    action: str,
    parts: list[tuple[str, bytes]] | None = None,
) -> Answer:
    message = (
        mtom_message(body, action=action, attachments=parts, to=url)
        if parts
        else soap_message(body, action=action, to=url)
    )
    return post_raw(http, url, message.body, message.content_type)


def post_raw(http: httpx.Client, url: str, content: bytes, content_type: str) -> Answer:
    response = http.post(url, content=content, headers={"content-type": content_type})
    assert response.status_code < 500, response.text
    return read_answer(response)


def find(
    http: httpx.Client, base: str, query_id: str, params: list[tuple[str, str | list[str]]], **kw: str
) -> Answer:
    return post(
        http, f"{base}/xds/registry", iti18.stored_query_request(query_id, params, **kw), iti18.ACTION
    )


def retrieve(http: httpx.Client, base: str, unique_ids: list[str], home: str | None = None) -> Answer:
    request = iti43.retrieve_request([(home, REPOSITORY, uid) for uid in unique_ids])
    return post(http, f"{base}/xds/repository", request, iti43.ACTION)


def patient_params(*extra: tuple[str, str | list[str]]) -> list[tuple[str, str | list[str]]]:
    return [
        ("$XDSDocumentEntryPatientId", f"{ALICE.id}^^^&{PATIENT_ISSUER}&ISO"),
        ("$XDSDocumentEntryStatus", ["urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"]),
        *extra,
    ]


def unique_ids(answer: Answer) -> list[str]:
    """uniqueId of each ExtrinsicObject of a LeafClass answer, in order."""
    scheme = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
    return [
        e.get("value", "")
        for e in answer.body.iter(f"{{{RIM}}}ExternalIdentifier")
        if e.get("identificationScheme") == scheme
    ]


# -- mutated messages --------------------------------------------------------------------------------
# Edits (position, bytes deleted, bytes inserted) that damage a valid message anywhere.
BYTE_EDITS = st.lists(
    st.tuples(st.integers(0, 10**6), st.integers(0, 8), st.binary(max_size=8)), min_size=1, max_size=4
)


def mutate(data: bytes, edits: list[tuple[int, int, bytes]]) -> bytes:
    for position, delete, insert in edits:
        at = position % (len(data) + 1)
        data = data[:at] + insert + data[at + delete :]
    return data


def assert_soap_answer(response: httpx.Response) -> None:
    """Never a 5xx: a SOAP envelope (a Fault or a registry response) or an MTOM answer."""
    assert response.status_code < 500, response.text
    if response.headers["content-type"].startswith("application/soap+xml"):
        assert etree.fromstring(response.content).tag == f"{{{SOAP}}}Envelope"
    else:
        assert response.headers["content-type"].startswith("multipart/related")
