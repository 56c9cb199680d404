"""A small CT study in two PACS and the official XDS-I.b schema. The SOAP client that reads answers on
its own (so that a fault in our MTOM writer cannot hide behind the same fault in our reader) is
tests/xds/xds_support's, on the path from this folder's conftest."""

from __future__ import annotations

import io
from dataclasses import dataclass

import httpx
import numpy as np
from lxml import etree
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from xds_support import SCHEMAS

from ncp.dicom.multipart import encode_multipart_bytes, multipart_content_type, new_boundary
from ncp.dicom.uids import deterministic_uid
from ncp.xdsi import DocumentRequest, ImagingRequest, request_element

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
