"""A small CT study in two PACS, the official XDS-I.b schema, and a SOAP client that reads answers on its
own (the standard library's MIME parser, a plain lxml parse), so that a fault in our MTOM writer cannot
be hidden by the same fault in our reader."""

from __future__ import annotations

import base64
import copy
import email.parser
import email.policy
import io
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from lxml import etree
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from ncp.dicom.multipart import encode_multipart_bytes, multipart_content_type, new_boundary
from ncp.dicom.uids import deterministic_uid
from ncp.soapcore import NS, soap_message
from ncp.xdsi import DocumentRequest, ImagingRequest, request_element

SCHEMAS = Path(__file__).parent.parent / "data" / "xds-schemas"
SOAP, WSA, XOP = NS["s"], NS["wsa"], NS["xop"]
RS = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
XDSB = "urn:ihe:iti:xds-b:2007"
SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"
FAILURE = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Failure"
PARTIAL = "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
EXPLICIT_LE = str(ExplicitVRLittleEndian)
RLE = "1.2.840.10008.1.2.5"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

# Two communities (an IG's own and a region), each region with one imaging document source
IG_HCID = "2.999.40.1"
FR_HCID = "2.999.250.1"
DE_HCID = "2.999.276.1"
FR_RLUID = "2.25.111111111111111111111111111111111111"
DE_RLUID = "2.25.222222222222222222222222222222222222"


@dataclass(frozen=True)
class Study:
    """A CT study: its UIDs and each instance's Part 10 bytes by SOP Instance UID (series order)."""

    study: str
    series: str
    instances: dict[str, bytes]

    def documents(self, home: str | None, repository: str) -> tuple[DocumentRequest, ...]:
        return tuple(DocumentRequest(self.study, self.series, home, repository, s) for s in self.instances)


def ct_study(key: str, count: int = 3, size: int = 32) -> Study:
    study, series = deterministic_uid(key, "study"), deterministic_uid(key, "series")
    instances = {}
    for i in range(count):
        sop = deterministic_uid(key, "sop", i)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.PatientName, ds.Modality = "PAT-1", "Doe^Jane", "CT"
        ds.SeriesNumber, ds.InstanceNumber = 1, i + 1
        ds.Rows = ds.Columns = size
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ramp = np.arange(size * size, dtype=np.int16).reshape(size, size) + i  # compressible, per-instance
        ds.PixelData = ramp.tobytes()
        out = io.BytesIO()
        ds.save_as(out, enforce_file_format=True)
        instances[sop] = out.getvalue()
    return Study(study, series, instances)


def stow(http: httpx.Client, pacs: str, study: Study) -> None:
    boundary = new_boundary()
    response = http.post(
        f"{pacs}/dicom-web/studies",
        content=encode_multipart_bytes(study.instances.values(), "application/dicom", boundary),
        headers={"content-type": multipart_content_type("application/dicom", boundary)},
    )
    assert response.status_code == 200, response.text


def request(docs: tuple[DocumentRequest, ...], *syntaxes: str) -> etree._Element:
    return request_element(ImagingRequest(docs, syntaxes or (EXPLICIT_LE,)))


# -- the official schema ---------------------------------------------------------------------------
def xdsi_schema() -> etree.XMLSchema:
    """IHE's XDS-I.b schema, which imports XDS.b's (the answer) and the OASIS ebRS/ebRIM 3.0 ones."""
    return etree.XMLSchema(etree.parse(str(SCHEMAS / "schema" / "IHE" / "IHEXDSIB.xsd")))


def assert_valid(
    schema: etree.XMLSchema, element: etree._Element, parts: dict[str, bytes] | None = None
) -> None:
    """Validate ``element`` as the XOP infoset it stands for (each xop:Include replaced by its part's
    base64, XOP 1.0 3.2)."""
    doc = copy.deepcopy(element)
    for include in list(doc.iter(f"{{{XOP}}}Include")):
        parent = include.getparent()
        assert parent is not None
        parent.remove(include)
        parent.text = base64.b64encode((parts or {})[include.get("href", "")[4:]]).decode()
    assert schema.validate(etree.ElementTree(doc)), schema.error_log.filter_from_errors()


# -- a SOAP client -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    status: int
    envelope: etree._Element
    parts: dict[str, bytes]

    @property
    def body(self) -> etree._Element:
        found = self.envelope.find(f"{{{SOAP}}}Body")
        assert found is not None
        return found[0]

    def header(self, local: str) -> str | None:
        return self.envelope.findtext(f"{{{SOAP}}}Header/{{{WSA}}}{local}")

    @property
    def status_value(self) -> str | None:
        return self.body.find(f"{{{RS}}}RegistryResponse").get("status")  # type: ignore[union-attr]

    def fault_subcode(self) -> str | None:
        return self.body.findtext(f"{{{SOAP}}}Code/{{{SOAP}}}Subcode/{{{SOAP}}}Value")

    def errors(self) -> list[dict[str, str]]:
        return [dict(e.attrib) for e in self.body.iter(f"{{{RS}}}RegistryError")]

    def documents(self) -> dict[str, bytes]:
        """Each DocumentResponse's bytes by DocumentUniqueId, through its xop:Include."""
        found = {}
        for doc in self.body.iterfind(f"{{{XDSB}}}DocumentResponse"):
            href = doc.find(f"{{{XDSB}}}Document/{{{XOP}}}Include").get("href")  # type: ignore[union-attr]
            found[doc.findtext(f"{{{XDSB}}}DocumentUniqueId") or ""] = self.parts[href[4:]]  # type: ignore[index]
        return found

    def document_field(self, local: str) -> set[str | None]:
        return {d.findtext(f"{{{XDSB}}}{local}") for d in self.body.iterfind(f"{{{XDSB}}}DocumentResponse")}


def read_answer(status: int, content_type: str, content: bytes) -> Answer:
    if not content_type.startswith("multipart/related"):
        return Answer(status, etree.fromstring(content), {})
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + content)
    assert not message.defects, message.defects  # a missing closing boundary is a defect here
    parts = list(message.iter_parts())
    attachments = {str(p["Content-ID"]).strip("<>"): p.get_payload(decode=True) for p in parts[1:]}
    root = parts[0].get_payload(decode=True)
    assert isinstance(root, bytes)
    return Answer(status, etree.fromstring(root), attachments)  # type: ignore[arg-type]


def post(http: httpx.Client, url: str, body: etree._Element, action: str) -> Answer:
    message = soap_message(body, action=action, to=url)
    response = http.post(url, content=message.body, headers={"content-type": message.content_type})
    assert response.status_code < 500, response.text
    return read_answer(response.status_code, response.headers.get("content-type", ""), response.content)


def post_raw(http: httpx.Client, url: str, content: bytes, content_type: str) -> Answer:
    response = http.post(url, content=content, headers={"content-type": content_type})
    assert response.status_code < 500, response.text
    return read_answer(response.status_code, response.headers.get("content-type", ""), response.content)
