"""STOW-RS (PS3.18 10.5): 200/202/400/409 with Referenced/Failed SOP Sequences; what Orthanc stores is
stored too (Big Endian, Deflated, no preamble, no file meta, a differing Media Storage SOP Instance UID);
hostile input never lands."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable, Iterator

import httpx
import numpy as np
import pydicom
import pytest
from pacs_harness import DICOM_MULTIPART, Pacs
from pacs_samples import Sample, ct_dataset, part10, sample_study
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import write_file_meta_info

from ncp.dicom.multipart import MultipartDecoder, encode_multipart_bytes, multipart_content_type, new_boundary
from ncp.dicom.uids import deterministic_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG_ENDIAN = "1.2.840.10008.1.2.2"
EVLE = "1.2.840.10008.1.2.1"
CANNOT_UNDERSTAND, OUT_OF_RESOURCES, PROCESSING_FAILURE = 0xC000, 0xA700, 0x0110


def one(tag: str, **kw: object) -> Sample:
    (sample,) = sample_study(tag, series=1, per_series=1, **kw)  # type: ignore[arg-type]
    return sample


def referenced(body: dict[str, object]) -> list[str]:
    return [item["00081155"]["Value"][0] for item in body.get("00081199", {}).get("Value", [])]  # type: ignore[union-attr]


def failed(body: dict[str, object]) -> list[dict[str, object]]:
    return list(body.get("00081198", {}).get("Value", []))  # type: ignore[union-attr]


def with_extra_elements(sample: Sample, extra: bytes) -> bytes:
    """The sample's bytes with raw (possibly hostile) elements appended after Pixel Data."""
    return sample.data + extra


def nested_sequences(depth: int) -> bytes:
    opening = struct.pack("<HH2sHI", 0x7FE1, 0x1010, b"SQ", 0, 0xFFFFFFFF) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF
    )
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return opening * depth + closing * depth


def deflate_bomb() -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = DEFLATED
    ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE
    ds.file_meta.MediaStorageSOPInstanceUID = deterministic_uid("bomb")
    head = io.BytesIO()
    write_file_meta_info(head, ds.file_meta)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = packer.compress(b"\0" * (64 << 20)) + packer.flush()  # 64 MB in ~64 KB
    return b"\0" * 128 + b"DICM" + head.getvalue() + body


def little_endian_labelled_big() -> bytes:
    data = bytearray(one("be").data)
    marker = b"1.2.840.10008.1.2.1\0"
    at = data.index(marker)
    data[at : at + len(marker)] = b"1.2.840.10008.1.2.2\0"
    return bytes(data)


def without_sop_instance_uid() -> bytes:
    ds = ct_dataset(deterministic_uid("nosop"), deterministic_uid("nosop-s"), deterministic_uid("nosop-i"))
    del ds.SOPInstanceUID
    return part10(ds)


HOSTILE: dict[str, Callable[[], bytes]] = {
    "not DICOM": lambda: b"GIF89a" + b"\x00" * 300,
    "empty": lambda: b"",
    "DICM but garbage": lambda: b"\0" * 128 + b"DICM" + bytes(range(256)) * 4,
    "deflate bomb": deflate_bomb,
    "deeply nested sequences": lambda: with_extra_elements(one("deep"), nested_sequences(10_000)),
    "huge declared length": lambda: with_extra_elements(
        one("huge"), struct.pack("<HH2sHI", 0x7FE1, 0x1011, b"OB", 0, 0xFFFFFFF0) + b"abc"
    ),
    "truncated file": lambda: one("trunc").data[:-1000],
    "little endian bytes labelled Big Endian": little_endian_labelled_big,
    "missing SOP Instance UID": without_sop_instance_uid,
    "a bare dataset of another group": lambda: b"\x10\x00\x10\x00PN\x08\x00Doe^Jane",
}


@pytest.fixture
def baseline(pacs: Pacs) -> Iterator[Pacs]:
    """A PACS holding one study, so 'unchanged' means something."""
    pacs.load(sample_study("baseline", series=1, per_series=2))
    yield pacs


def snapshot(pacs: Pacs) -> tuple[dict[str, bytes], list[object], list[str]]:
    incoming = sorted(p.name for p in (pacs.storage / ".incoming").iterdir())
    return pacs.files(), pacs.get("/instances", accept="application/dicom+json").json(), incoming


def test_all_stored_is_200_with_retrieve_urls(pacs: Pacs, study: list[Sample]) -> None:
    response = pacs.stow([s.data for s in study])
    body = response.json()

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
    assert referenced(body) == [s.sop for s in study]
    assert "00081198" not in body
    assert body["00081190"]["Value"] == [f"{pacs.base}/studies/{study[0].study}"]
    first = body["00081199"]["Value"][0]
    assert first["00081150"]["Value"] == [CT_IMAGE]
    assert (
        pacs.http.get(first["00081190"]["Value"][0], headers={"Accept": DICOM_MULTIPART}).status_code == 200
    )


def test_files_are_laid_out_by_uid(pacs: Pacs, study: list[Sample]) -> None:
    pacs.load(study)

    assert set(pacs.files()) == {f"{s.study}/{s.series}/{s.sop}.dcm" for s in study}


def test_storing_the_same_instance_again_replaces_it(pacs: Pacs) -> None:
    study, series, sop = (deterministic_uid("again", n) for n in range(3))
    first = part10(ct_dataset(study, series, sop, patient_name="Before^Name"))
    second = part10(ct_dataset(study, series, sop, patient_name="After^Name"))

    assert pacs.stow([first]).status_code == 200
    assert pacs.stow([second]).status_code == 200

    (item,) = pacs.get(f"/studies/{study}/metadata", accept="application/dicom+json").json()
    assert item["00100010"]["Value"] == [{"Alphabetic": "After^Name"}]
    assert list(pacs.files().values()) == [second]


def test_an_instance_moved_to_another_series_leaves_no_stale_file(pacs: Pacs) -> None:
    study, sop = deterministic_uid("move"), deterministic_uid("move-i")
    old, new = deterministic_uid("move-s1"), deterministic_uid("move-s2")
    pacs.stow([part10(ct_dataset(study, old, sop))])
    pacs.stow([part10(ct_dataset(study, new, sop))])

    assert list(pacs.files()) == [f"{study}/{new}/{sop}.dcm"]
    assert pacs.get(f"/studies/{study}/series/{old}").status_code == 404


def test_some_failed_is_202_and_only_the_good_ones_are_stored(baseline: Pacs) -> None:
    good = one("partly-good")
    response = baseline.stow([b"not dicom at all", good.data])
    body = response.json()

    assert response.status_code == 202
    assert referenced(body) == [good.sop]
    (failure,) = failed(body)
    assert failure["00081197"] == {"vr": "US", "Value": [CANNOT_UNDERSTAND]}
    assert "part 1" in response.headers["warning"]
    assert f"{good.study}/{good.series}/{good.sop}.dcm" in baseline.files()


@pytest.mark.parametrize("name", list(HOSTILE))
def test_unreadable_parts_are_400_cannot_understand_and_leave_the_store_unchanged(
    baseline: Pacs, name: str
) -> None:
    before = snapshot(baseline)

    response = baseline.stow([HOSTILE[name]()])

    assert response.status_code == 400, response.text  # PS3.18 Table 10.5.3-1: bad syntax
    (failure,) = failed(response.json())
    assert failure["00081197"]["Value"] == [CANNOT_UNDERSTAND]
    assert response.headers["warning"].startswith("299 pacs ")
    assert snapshot(baseline) == before


def test_a_deflate_bomb_is_refused_out_of_resources_without_inflating_past_the_bound(
    start_pacs: Callable[..., Pacs],
) -> None:
    pacs = start_pacs(max_stow_bytes=1 << 20)
    bomb = deflate_bomb()
    assert len(bomb) < 1 << 20

    response = pacs.stow([bomb])

    assert response.status_code == 409  # well-formed, refused: PS3.18 Table 10.5.3-1
    (failure,) = failed(response.json())
    assert failure["00081197"]["Value"] == [OUT_OF_RESOURCES]
    assert "inflates beyond" in response.headers["warning"]
    assert pacs.files() == {}
    assert list((pacs.storage / ".incoming").iterdir()) == []


def test_parts_refused_for_a_mixture_of_reasons_are_409(baseline: Pacs) -> None:
    other_study = one("mixture")
    response = baseline.stow([b"not dicom", other_study.data], path=f"/studies/{deterministic_uid('mix-t')}")

    assert response.status_code == 409
    assert sorted(f["00081197"]["Value"][0] for f in failed(response.json())) == [
        PROCESSING_FAILURE,
        CANNOT_UNDERSTAND,
    ]


def test_failure_items_name_the_instance_when_it_could_be_read(baseline: Pacs) -> None:
    sample = one("named-failure")
    response = baseline.stow([sample.data], path=f"/studies/{deterministic_uid('other-study')}")

    (failure,) = failed(response.json())
    assert response.status_code == 409
    assert failure["00081155"]["Value"] == [sample.sop]
    assert failure["00081150"]["Value"] == [CT_IMAGE]
    assert failure["00081197"]["Value"] == [PROCESSING_FAILURE]
    assert "target study" in response.headers["warning"]


def test_stow_to_a_study_accepts_its_own_instances(pacs: Pacs) -> None:
    sample = one("target-ok")
    response = pacs.stow([sample.data], path=f"/studies/{sample.study}")

    assert response.status_code == 200
    assert response.json()["00081190"]["Value"] == [f"{pacs.base}/studies/{sample.study}"]


def test_a_part_of_another_media_type_fails_alone(pacs: Pacs) -> None:
    good = one("typed")
    boundary = new_boundary()
    message = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + good.data
        + f"\r\n--{boundary}\r\nContent-Type: application/pdf\r\n\r\n%PDF-1.4\r\n--{boundary}--\r\n".encode()
    )
    response = pacs.http.post(
        pacs.base + "/studies",
        content=message,
        headers={"Content-Type": multipart_content_type("application/dicom", boundary)},
    )

    assert response.status_code == 202
    assert referenced(response.json()) == [good.sop]
    assert "application/pdf" in response.headers["warning"]


def test_a_truncated_body_is_400_and_stores_nothing_not_even_complete_parts(baseline: Pacs) -> None:
    before = snapshot(baseline)
    samples = sample_study("truncated-body", series=1, per_series=3)
    boundary = new_boundary()
    message = encode_multipart_bytes([s.data for s in samples], "application/dicom", boundary)

    response = baseline.http.post(
        baseline.base + "/studies",
        content=message[:-200],
        headers={"Content-Type": multipart_content_type("application/dicom", boundary)},
    )

    assert response.status_code == 400
    assert "truncated" in response.headers["warning"]
    assert snapshot(baseline) == before


@pytest.mark.parametrize(
    "content_type",
    ["application/dicom", 'multipart/related; type="application/dicom+json"; boundary=x', "text/plain", None],
)
def test_wrong_request_media_type_is_415(baseline: Pacs, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = baseline.http.post(baseline.base + "/studies", content=one("415").data, headers=headers)

    assert response.status_code == 415
    assert response.headers["warning"].startswith("299 pacs ")


def test_a_message_without_parts_is_400(pacs: Pacs) -> None:
    response = pacs.stow([])

    assert response.status_code == 400


def test_a_malformed_study_uid_in_the_path_is_400(baseline: Pacs) -> None:
    before = snapshot(baseline)
    response = baseline.stow([one("bad-path").data], path="/studies/1.2.abc")

    assert response.status_code == 400
    assert snapshot(baseline) == before


def test_a_body_over_the_bound_is_413_by_content_length(start_pacs: Callable[..., Pacs]) -> None:
    pacs = start_pacs(max_stow_bytes=100_000)
    big = sample_study("too-big", series=1, per_series=1, size=256)  # ~130 KB

    response = pacs.stow([big[0].data])

    assert response.status_code == 413
    assert response.headers["warning"].startswith("299 pacs ")
    assert pacs.files() == {}


def test_a_streamed_body_over_the_bound_is_413_and_stores_nothing(start_pacs: Callable[..., Pacs]) -> None:
    pacs = start_pacs(max_stow_bytes=200_000)
    samples = sample_study("too-big-streamed", series=1, per_series=4, size=128)  # ~33 KB each
    boundary = new_boundary()
    message = encode_multipart_bytes([s.data for s in samples] * 2, "application/dicom", boundary)

    def chunked() -> Iterator[bytes]:  # no Content-Length: the bound is enforced while reading
        for i in range(0, len(message), 16_384):
            yield message[i : i + 16_384]

    response = pacs.http.post(
        pacs.base + "/studies",
        content=chunked(),
        headers={"Content-Type": multipart_content_type("application/dicom", boundary)},
    )

    assert response.status_code == 413
    assert pacs.files() == {}


def test_stored_instances_parse_back_identically(pacs: Pacs, study: list[Sample]) -> None:
    pacs.load(study)

    for s in study:
        stored = pydicom.dcmread(pacs.storage / s.study / s.series / f"{s.sop}.dcm")
        assert stored.SOPInstanceUID == s.sop
        assert (pacs.storage / s.study / s.series / f"{s.sop}.dcm").read_bytes() == s.data


# -- what other archives store: converted or repaired, then retrievable --------------------------------
def retrieve(pacs: Pacs, study: str, series: str, sop: str) -> bytes:
    response = pacs.get(
        f"/studies/{study}/series/{series}/instances/{sop}",
        accept='multipart/related; type="application/dicom"; transfer-syntax=*',
    )
    assert response.status_code == 200, response.headers.get("warning")
    decoder = MultipartDecoder(response.headers["content-type"])
    (part,) = decoder.feed(response.content)
    decoder.close()
    return part.body


def stow_and_retrieve(pacs: Pacs, data: bytes) -> pydicom.Dataset:
    response = pacs.stow([data])
    assert response.status_code == 200, response.headers.get("warning")
    sent = pydicom.dcmread(io.BytesIO(data), force=True)
    (url,) = [i["00081190"]["Value"][0] for i in response.json()["00081199"]["Value"]]
    assert url.endswith(f"/instances/{sent.SOPInstanceUID}")
    return pydicom.dcmread(
        io.BytesIO(retrieve(pacs, sent.StudyInstanceUID, sent.SeriesInstanceUID, sent.SOPInstanceUID))
    )


def pydicom_file(name: str) -> bytes:
    with open(str(get_testdata_file(name)), "rb") as f:
        return f.read()


@pytest.mark.parametrize("name", ["MR_small_bigendian.dcm", "SC_rgb_small_odd_big_endian.dcm"])
def test_big_endian_is_stored_as_explicit_little_endian_with_the_same_pixels(pacs: Pacs, name: str) -> None:
    original = pydicom.dcmread(io.BytesIO(pydicom_file(name)))

    stored = stow_and_retrieve(pacs, pydicom_file(name))

    assert stored.file_meta.TransferSyntaxUID == EVLE
    assert stored.PatientName == original.PatientName and stored.Rows == original.Rows
    assert np.array_equal(stored.pixel_array, original.pixel_array)


def test_deflated_is_stored_inflated(pacs: Pacs) -> None:
    original = pydicom.dcmread(io.BytesIO(pydicom_file("image_dfl.dcm")))
    assert original.file_meta.TransferSyntaxUID == DEFLATED

    stored = stow_and_retrieve(pacs, pydicom_file("image_dfl.dcm"))

    assert stored.file_meta.TransferSyntaxUID == EVLE
    assert stored.PixelData == original.PixelData


def test_a_file_without_preamble_is_stored_as_a_complete_part10_file(pacs: Pacs) -> None:
    sample = one("no-preamble")
    headless = sample.data[132:]  # the file meta group first, as some writers send it
    assert headless[:2] == b"\x02\x00"

    response = pacs.stow([headless])
    body = retrieve(pacs, sample.study, sample.series, sample.sop)

    assert response.status_code == 200
    assert body == sample.data


def test_a_bare_dataset_without_file_meta_is_stored_with_one(pacs: Pacs) -> None:
    original = pydicom.dcmread(io.BytesIO(pydicom_file("ExplVR_LitEndNoMeta.dcm")), force=True)

    stored = stow_and_retrieve(pacs, pydicom_file("ExplVR_LitEndNoMeta.dcm"))

    assert stored.preamble is not None and stored.file_meta.TransferSyntaxUID == EVLE
    assert stored.file_meta.MediaStorageSOPInstanceUID == original.SOPInstanceUID
    assert stored.file_meta.MediaStorageSOPClassUID == original.SOPClassUID
    assert stored.PlanIntent == original.PlanIntent and stored.StudyDate == original.StudyDate


def test_a_differing_media_storage_sop_instance_uid_is_stored_under_the_datasets_uid(pacs: Pacs) -> None:
    study, series, sop = (deterministic_uid("mssop", n) for n in range(3))
    ds = ct_dataset(study, series, sop)
    ds.file_meta.MediaStorageSOPInstanceUID = deterministic_uid("mssop-other")  # as DicomBrowser writes

    stored = stow_and_retrieve(pacs, part10(ds))

    assert stored.SOPInstanceUID == stored.file_meta.MediaStorageSOPInstanceUID == sop
    assert stored.PixelData == ds.PixelData
    assert (
        pacs.get(f"/studies/{study}/series/{series}/instances/{deterministic_uid('mssop-other')}").status_code
        == 404
    )


def test_converted_instances_are_searchable_by_what_they_hold(pacs: Pacs) -> None:
    original = pydicom.dcmread(io.BytesIO(pydicom_file("MR_small_bigendian.dcm")))
    pacs.stow([pydicom_file("MR_small_bigendian.dcm")])

    response: httpx.Response = pacs.get(
        "/instances", accept="application/dicom+json", Rows=str(original.Rows)
    )

    assert [r["00080018"]["Value"][0] for r in response.json()] == [original.SOPInstanceUID]


@pytest.mark.filterwarnings("ignore::UserWarning")  # pydicom warns about the value, as it would in production
def test_a_malformed_value_does_not_refuse_the_instance(pacs: Pacs) -> None:
    study, series, sop = (deterministic_uid("bad-is", n) for n in range(3))
    data = part10(ct_dataset(study, series, sop))
    at = data.index(b"\x20\x00\x13\x00IS\x02\x00")  # Instance Number, 2 bytes
    malformed = data[: at + 8] + b"x " + data[at + 10 :]

    response = pacs.stow([malformed])
    (item,) = pacs.get(f"/studies/{study}/metadata", accept="application/dicom+json").json()

    assert response.status_code == 200
    assert item["00200013"] == {"vr": "IS"}  # DICOM JSON carries IS as a number: this one cannot ...
    assert retrieve(pacs, study, series, sop) == malformed  # ... the stored file still does
