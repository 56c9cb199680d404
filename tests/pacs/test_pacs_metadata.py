"""WADO-RS metadata and bulk data (PS3.18 10.4.1.1.2, 10.4.1.1.5): every attribute, bulk data by URI,
DICOM JSON and PS3.19 XML, character sets decoded; a third-party client reads it back whole."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from defusedxml import ElementTree
from dicomweb_client.api import DICOMwebClient
from pacs_harness import Pacs
from pacs_samples import Sample, ct_dataset, part10
from pydicom.data import get_charset_files, get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import generate_fragments
from pydicom.uid import EncapsulatedPDFStorage

from ncp.dicom.multipart import MultipartDecoder
from ncp.dicom.uids import deterministic_uid
from ncp.pacs.app import PacsSettings, create_pacs_app
from ncp.server import serve_in_thread

JSON = "application/dicom+json"
XML = 'multipart/related; type="application/dicom+xml"'
OCTETS = 'multipart/related; type="application/octet-stream"'
NS = "{http://dicom.nema.org/PS3.19/models/NativeDICOM}"
NATIVE = ["MR_small.dcm", "CT_small.dcm", "waveform_ecg.dcm", "rtplan.dcm", "examples_overlay.dcm"]
CHARSETS = ["chrH31.dcm", "chrX1.dcm", "chrX2.dcm", "chrI2.dcm", "chrRuss.dcm"]


def pdf_document() -> bytes:
    """An Encapsulated PDF instance (PS3.3 A.45) whose document is bulk data at any size."""
    study, series, sop = (deterministic_uid("pdf", n) for n in range(3))
    ds = ct_dataset(study, series, sop)
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored", "HighBit"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EncapsulatedPDFStorage
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    ds.EncapsulatedDocument = b"%PDF-1.4\n" + b"0123456789" * 30 + b"\n%%EOF\n"
    return part10(ds)


def originals() -> dict[str, bytes]:
    files = {name: Path(str(get_testdata_file(name))).read_bytes() for name in [*NATIVE, "JPEG2000.dcm"]}
    files |= {name: Path(get_charset_files(name)[0]).read_bytes() for name in CHARSETS}
    return files | {"pdf": pdf_document()}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pacs, dict[str, Dataset]]]:
    """One PACS holding pydicom's test files; their datasets by name."""
    files = originals()
    with (
        serve_in_thread(create_pacs_app(PacsSettings(storage_dir=tmp_path_factory.mktemp("md")))) as url,
        httpx.Client(timeout=30) as http,
    ):
        pacs = Pacs(url + "/dicom-web", Path("unused"), http)
        assert pacs.stow(files.values()).status_code == 200
        yield pacs, {name: pydicom.dcmread(io.BytesIO(data)) for name, data in files.items()}


def path(ds: Dataset) -> str:
    return f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"


def metadata(pacs: Pacs, ds: Dataset, **headers: str) -> dict[str, Any]:
    response = pacs.http.get(pacs.base + path(ds) + "/metadata", headers={"Accept": JSON, **headers})
    assert response.status_code == 200, response.headers.get("warning")
    assert response.headers["content-type"] == JSON
    (item,) = response.json()
    return dict(item)


def parts(response: httpx.Response) -> list[bytes]:
    decoder = MultipartDecoder(response.headers["content-type"])
    decoded = decoder.feed(response.content)
    decoder.close()
    return [p.body for p in decoded]


def fetch_bulk(http: httpx.Client, uri: str) -> bytes:
    response = http.get(uri, headers={"Accept": OCTETS})
    assert response.status_code == 200, response.headers.get("warning")
    (body,) = parts(response)
    return body


def bulk_uris(node: Any) -> list[str]:
    if isinstance(node, list):
        return [u for item in node for u in bulk_uris(item)]
    if isinstance(node, dict):
        own = [node["BulkDataURI"]] if "BulkDataURI" in node else []
        return own + [u for value in node.values() for u in bulk_uris(value)]
    return []


@pytest.mark.parametrize("name", [*NATIVE, "pdf"])
def test_metadata_holds_every_attribute_and_bulk_uris_give_back_the_original_bytes(
    archive: tuple[Pacs, dict[str, Dataset]], name: str
) -> None:
    pacs, datasets = archive
    original = datasets[name]

    item = metadata(pacs, original)
    rebuilt = Dataset.from_json(item, bulk_data_uri_handler=lambda uri: fetch_bulk(pacs.http, uri))

    assert bool(bulk_uris(item)) == (name != "rtplan.dcm")  # pixel/waveform/overlay data, documents
    assert all(u.startswith(pacs.base + path(original) + "/bulkdata/") for u in bulk_uris(item))
    assert all(len(v.get("InlineBinary", "")) <= 4 * 1024 // 3 + 4 for v in item.values())  # <= 1 KiB
    expected = [e for e in original.iterall() if e.tag.element != 0]
    assert [e.tag for e in rebuilt.iterall()] == [e.tag for e in expected]
    for mine, theirs in zip(rebuilt.iterall(), expected, strict=True):
        if mine.VR != "SQ":
            assert mine.value == theirs.value, mine.tag


def test_nested_bulk_data_has_its_item_path(archive: tuple[Pacs, dict[str, Dataset]]) -> None:
    pacs, datasets = archive
    ecg = datasets["waveform_ecg.dcm"]

    item = metadata(pacs, ecg)
    second = item["54000100"]["Value"][1]["54001010"]

    assert second["BulkDataURI"] == pacs.base + path(ecg) + "/bulkdata/54000100/2/54001010"
    assert fetch_bulk(pacs.http, second["BulkDataURI"]) == ecg.WaveformSequence[1].WaveformData


def test_encapsulated_pixel_data_is_one_part_per_item(archive: tuple[Pacs, dict[str, Dataset]]) -> None:
    pacs, datasets = archive
    jpeg2000 = datasets["JPEG2000.dcm"]

    uri = metadata(pacs, jpeg2000)["7FE00010"]["BulkDataURI"]
    response = pacs.http.get(uri, headers={"Accept": OCTETS})

    assert response.status_code == 200
    offsets, *fragments = parts(response)
    assert [offsets, *fragments] == list(generate_fragments(jpeg2000.PixelData))
    assert len(offsets) % 4 == 0 and fragments  # the Basic Offset Table, possibly empty (PS3.5 A.4)


def test_bulk_data_may_be_asked_for_as_a_bare_octet_stream(archive: tuple[Pacs, dict[str, Dataset]]) -> None:
    pacs, datasets = archive
    mr = datasets["MR_small.dcm"]

    response = pacs.http.get(
        metadata(pacs, mr)["7FE00010"]["BulkDataURI"], headers={"Accept": "application/octet-stream"}
    )

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == mr.PixelData


@pytest.mark.parametrize(
    ("suffix", "needle"),
    [
        ("/bulkdata/00100010", "no bulk data"),  # an attribute, but not bulk data
        ("/bulkdata/7FE10010", "no bulk data"),  # absent
        ("/bulkdata/7FE00010/1/00000000", "no bulk data"),  # not a sequence
        ("/bulkdata/not-a-tag", "no bulk data"),
    ],
)
def test_unknown_bulk_data_is_404_with_a_warning(
    archive: tuple[Pacs, dict[str, Dataset]], suffix: str, needle: str
) -> None:
    pacs, datasets = archive

    response = pacs.http.get(pacs.base + path(datasets["MR_small.dcm"]) + suffix, headers={"Accept": OCTETS})

    assert response.status_code == 404
    assert needle in response.headers["warning"]


def test_a_bulk_uri_under_another_study_is_404(archive: tuple[Pacs, dict[str, Dataset]]) -> None:
    pacs, datasets = archive
    mr, other = datasets["MR_small.dcm"], datasets["rtplan.dcm"]
    wrong = f"/studies/{other.StudyInstanceUID}/series/{mr.SeriesInstanceUID}/instances/{mr.SOPInstanceUID}"

    response = pacs.http.get(pacs.base + wrong + "/bulkdata/7FE00010", headers={"Accept": OCTETS})

    assert response.status_code == 404
    assert response.headers["warning"].startswith("299 pacs ")


def test_bulk_uris_are_built_on_the_forwarded_public_base(archive: tuple[Pacs, dict[str, Dataset]]) -> None:
    pacs, datasets = archive
    public = "https://ncp-b.example:8443/wado/homeCommunityId/1.2.3/RetrieveLocationUID/1.2.4"

    item = metadata(
        pacs,
        datasets["MR_small.dcm"],
        Forwarded="host=ncp-b.example:8443;proto=https",
        **{"X-Forwarded-Prefix": public.split("8443", 1)[1]},
    )

    assert item["7FE00010"]["BulkDataURI"] == public + path(datasets["MR_small.dcm"]) + "/bulkdata/7FE00010"


@pytest.mark.parametrize(
    ("name", "groups"),
    [
        (
            "chrH31.dcm",
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
        ),
        ("chrX1.dcm", {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}),
        ("chrX2.dcm", {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小东"}),
        ("chrI2.dcm", {"Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞", "Phonetic": "홍^길동"}),
        ("chrRuss.dcm", {"Alphabetic": "Люкceмбypг"}),
    ],
)
def test_metadata_of_other_character_sets_is_decoded(
    archive: tuple[Pacs, dict[str, Dataset]], name: str, groups: dict[str, str]
) -> None:
    pacs, datasets = archive

    item = metadata(pacs, datasets[name])

    assert item["00100010"] == {"vr": "PN", "Value": [groups]}
    charset = Dataset.from_json({"00080005": item["00080005"]}).SpecificCharacterSet
    assert charset == datasets[name].SpecificCharacterSet  # as stored; the JSON itself is Unicode


def xml_documents(pacs: Pacs, resource: str, accept: str = XML) -> list[Any]:
    response = pacs.http.get(pacs.base + resource + "/metadata", headers={"Accept": accept})
    assert response.status_code == 200, response.headers.get("warning")
    assert response.headers["content-type"].startswith('multipart/related; type="application/dicom+xml"')
    return [ElementTree.fromstring(body) for body in parts(response)]


def attribute(root: Any, tag: str) -> Any:
    return root.find(f"{NS}DicomAttribute[@tag='{tag}']")


def test_xml_metadata_is_the_native_dicom_model_of_every_attribute(
    archive: tuple[Pacs, dict[str, Dataset]],
) -> None:
    pacs, datasets = archive
    mr = datasets["MR_small.dcm"]

    (root,) = xml_documents(pacs, path(mr))
    item = metadata(pacs, mr)

    assert root.tag == f"{NS}NativeDicomModel"
    assert [a.get("tag") for a in root.findall(f"{NS}DicomAttribute")] == list(item)
    rows = attribute(root, "00280010")
    assert (rows.get("vr"), rows.get("keyword"), rows.find(f"{NS}Value").text) == ("US", "Rows", str(mr.Rows))
    image_type = [v.text for v in attribute(root, "00080008").findall(f"{NS}Value")]
    assert image_type == list(mr.ImageType)
    bulk = attribute(root, "7FE00010").find(f"{NS}BulkData")
    assert bulk.get("uri") == item["7FE00010"]["BulkDataURI"]
    assert fetch_bulk(pacs.http, bulk.get("uri")) == mr.PixelData


def test_xml_private_attributes_name_their_private_creator(archive: tuple[Pacs, dict[str, Dataset]]) -> None:
    pacs, datasets = archive
    ct = datasets["CT_small.dcm"]

    (root,) = xml_documents(pacs, path(ct))

    private = attribute(root, "00091001")
    assert private.get("privateCreator") == ct[0x00090010].value == "GEMS_IDEN_01"
    assert private.get("keyword") is None
    assert attribute(root, "00100010").get("privateCreator") is None


def test_xml_person_names_have_their_component_groups(archive: tuple[Pacs, dict[str, Dataset]]) -> None:
    pacs, datasets = archive

    (root,) = xml_documents(pacs, path(datasets["chrH31.dcm"]), accept="application/dicom+xml")

    name = attribute(root, "00100010").find(f"{NS}PersonName")
    assert name.get("number") == "1"
    assert name.find(f"{NS}Alphabetic/{NS}FamilyName").text == "Yamada"
    assert name.find(f"{NS}Ideographic/{NS}GivenName").text == "太郎"
    assert name.find(f"{NS}Phonetic/{NS}FamilyName").text == "やまだ"


def test_xml_sequences_are_numbered_items(archive: tuple[Pacs, dict[str, Dataset]]) -> None:
    pacs, datasets = archive
    plan = datasets["rtplan.dcm"]

    (root,) = xml_documents(pacs, f"/studies/{plan.StudyInstanceUID}")

    beams = attribute(root, "300A00B0").findall(f"{NS}Item")
    assert [b.get("number") for b in beams] == [str(n) for n in range(1, len(plan.BeamSequence) + 1)]
    names = [attribute(b, "300A00C2").find(f"{NS}Value").text for b in beams]
    assert names == [b.BeamName for b in plan.BeamSequence]


def test_study_metadata_has_one_item_or_part_per_instance(pacs: Pacs) -> None:
    study = deterministic_uid("md-study")
    sops = [deterministic_uid("md-sop", n) for n in range(3)]
    series = deterministic_uid("md-series")
    pacs.load([Sample(study, series, sop, part10(ct_dataset(study, series, sop))) for sop in sops])

    items = pacs.get(f"/studies/{study}/metadata", accept=JSON).json()
    documents = xml_documents(pacs, f"/studies/{study}")

    assert sorted(i["00080018"]["Value"][0] for i in items) == sorted(sops)
    assert len(documents) == 3


def test_metadata_in_another_media_type_is_406(archive: tuple[Pacs, dict[str, Dataset]]) -> None:
    pacs, datasets = archive

    response = pacs.http.get(
        pacs.base + path(datasets["MR_small.dcm"]) + "/metadata", headers={"Accept": "image/png"}
    )

    assert response.status_code == 406
    assert "dicom+xml" in response.headers["warning"]


def test_dicomweb_client_searches_and_reads_metadata_with_bulk_data(
    archive: tuple[Pacs, dict[str, Dataset]],
) -> None:
    pacs, datasets = archive
    mr = datasets["MR_small.dcm"]
    client = DICOMwebClient(url=pacs.base)

    (found,) = client.search_for_instances(
        study_instance_uid=mr.StudyInstanceUID, search_filters={"SOPInstanceUID": mr.SOPInstanceUID}
    )
    item = client.retrieve_instance_metadata(mr.StudyInstanceUID, mr.SeriesInstanceUID, mr.SOPInstanceUID)

    # dicomweb-client sends `Host` without the port (web.py _http_get), so the URIs built on it name
    # port 80: read them against the client's base instead.
    def rebased(uri: str) -> str:
        assert uri.endswith(path(mr) + "/bulkdata/7FE00010")
        return pacs.base + uri.split("/dicom-web", 1)[1]

    loaded = Dataset.from_json(
        item, bulk_data_uri_handler=lambda uri: bytes(client.retrieve_bulkdata(rebased(uri))[0])
    )

    assert Dataset.from_json(found).Rows == mr.Rows
    assert loaded.PixelData == mr.PixelData
    assert loaded.PatientName == mr.PatientName and loaded.SOPInstanceUID == mr.SOPInstanceUID
