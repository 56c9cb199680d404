"""Accept negotiation over HTTP (PS3.18 8.7, RFC 9110 12.5.1): several and weighted media ranges,
unknown ones ignored when another is acceptable, absurd headers refused, Allow on 405 and OPTIONS."""

from __future__ import annotations

import io

import pydicom
import pytest
from pacs_harness import Pacs, decode
from pacs_samples import Sample, part10

from ncp.dicom.multipart import DecodedPart

EVLE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
RLE = "1.2.840.10008.1.2.5"
DICOM = 'multipart/related; type="application/dicom"'


def instance_path(s: Sample) -> str:
    return f"/studies/{s.study}/series/{s.series}/instances/{s.sop}"


@pytest.fixture(scope="module")
def rle(shared: Pacs, study: list[Sample]) -> Sample:
    """One instance of the shared study stored RLE-compressed, replacing its uncompressed copy."""
    ds = pydicom.dcmread(io.BytesIO(study[-1].data))
    ds.compress(RLE, generate_instance_uid=False)
    data = part10(ds)
    assert shared.stow([data]).status_code == 200
    return Sample(study[-1].study, study[-1].series, study[-1].sop, data)


def syntax_of(part: DecodedPart) -> str:
    return str(pydicom.dcmread(io.BytesIO(part.body)).file_meta.TransferSyntaxUID)


def test_an_unknown_media_type_is_ignored_when_another_is_acceptable(
    shared: Pacs, study: list[Sample]
) -> None:
    search = shared.get("/studies", accept="toto, application/dicom+json")
    retrieve = shared.get(instance_path(study[0]), accept=f"toto, {DICOM}")

    assert search.status_code == 200
    assert search.headers["content-type"] == "application/dicom+json"
    assert retrieve.status_code == 200
    assert [p.body for p in decode(retrieve)] == [study[0].data]


@pytest.mark.parametrize(("accept", "status"), [("toto", 400), ("toto, a/b; q=x", 400), ("text/html", 406)])
def test_nothing_acceptable_is_a_4xx_with_a_warning(
    shared: Pacs, study: list[Sample], accept: str, status: int
) -> None:
    response = shared.get(instance_path(study[0]), accept=accept)

    assert response.status_code == status
    assert response.headers["warning"].startswith("299 pacs ")


@pytest.mark.parametrize(
    ("accept", "syntax"),
    [
        (f"{DICOM}; transfer-syntax={RLE}; q=0.9, {DICOM}; q=0.5", RLE),
        (f"{DICOM}; transfer-syntax={RLE}; q=0.4, {DICOM}; q=0.5", EVLE),
        (
            f"{DICOM}; transfer-syntax={JPEG_BASELINE}, {DICOM}; transfer-syntax={J2K_LOSSLESS}; q=0.7",
            J2K_LOSSLESS,
        ),
        (f"{DICOM}; q=0.1, {DICOM}; transfer-syntax=*; q=0.2", RLE),
    ],
)
def test_weighted_transfer_syntaxes_pick_the_best_one_that_can_be_produced(
    shared: Pacs, rle: Sample, accept: str, syntax: str
) -> None:
    response = shared.get(instance_path(rle), accept=accept)

    assert response.status_code == 200, response.headers.get("warning")
    (part,) = decode(response)
    assert syntax_of(part) == syntax
    assert part.content_type == f"application/dicom; transfer-syntax={syntax}"


@pytest.mark.parametrize(
    ("accept", "multipart"),
    [
        (f"application/dicom; q=0.2, {DICOM}; q=0.8", True),
        (f"application/dicom; q=0.9, {DICOM}; q=0.8", False),
        (f"{DICOM}; q=0, application/dicom", False),
    ],
)
def test_weights_choose_between_single_part_and_multipart(
    shared: Pacs, study: list[Sample], accept: str, multipart: bool
) -> None:
    response = shared.get(instance_path(study[0]), accept=accept)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith(
        "multipart/related" if multipart else "application/dicom"
    )


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("application/json; q=0.9, application/dicom+json; q=0.5", "application/json"),
        ("application/json; q=0.5, application/dicom+json; q=0.9", "application/dicom+json"),
        ("application/dicom+json; q=0, */*", "application/json"),
    ],
)
def test_weighted_json_types_for_search(shared: Pacs, accept: str, media_type: str) -> None:
    response = shared.get("/studies", accept=accept)

    assert response.status_code == 200
    assert response.headers["content-type"] == media_type


@pytest.mark.parametrize(
    ("accept", "media_type"),
    [
        ("image/png; q=0.5, image/jpeg; q=0.9", "image/jpeg"),
        ("image/png; q=0.9, image/jpeg; q=0.5", "image/png"),
        ("toto, image/png", "image/png"),
        ("image/gif, image/png; q=0.1", "image/png"),
    ],
)
def test_weighted_rendered_types(shared: Pacs, study: list[Sample], accept: str, media_type: str) -> None:
    response = shared.get(instance_path(study[0]) + "/rendered", accept=accept)

    assert response.status_code == 200
    assert response.headers["content-type"] == media_type


RLE_FRAMES = "multipart/related; type=image/dicom-rle"
OCTET_FRAMES = "multipart/related; type=application/octet-stream"


@pytest.mark.parametrize(
    ("accept", "part_type"),
    [
        (f"{RLE_FRAMES}; q=0.9, {OCTET_FRAMES}; q=0.5", f"image/dicom-rle; transfer-syntax={RLE}"),
        (f"{RLE_FRAMES}; q=0.4, {OCTET_FRAMES}; q=0.5", f"application/octet-stream; transfer-syntax={EVLE}"),
        (
            f"multipart/related; type=image/jpeg, {OCTET_FRAMES}; q=0.1",
            f"application/octet-stream; transfer-syntax={EVLE}",
        ),
    ],
)
def test_weighted_frame_media_types(shared: Pacs, rle: Sample, accept: str, part_type: str) -> None:
    response = shared.get(instance_path(rle) + "/frames/1", accept=accept)

    assert response.status_code == 200, response.headers.get("warning")
    assert [p.content_type for p in decode(response)] == [part_type]


@pytest.mark.parametrize(
    "accept",
    [
        ", ".join(["a/b; q=0.1"] * 10_000),  # thousands of entries
        "application/dicom+json; x=" + "y" * 20_000,  # one huge entry
        ", ".join(["application/dicom+json"] * 65),  # just over the limit
    ],
    ids=["ten-thousand-ranges", "huge-range", "sixty-five-ranges"],
)
def test_absurd_accept_headers_are_400_with_a_warning(shared: Pacs, study: list[Sample], accept: str) -> None:
    before = shared.files()
    for path in ("/studies", instance_path(study[0]), instance_path(study[0]) + "/frames/1"):
        response = shared.get(path, accept=accept)

        assert response.status_code == 400, path
        assert "Accept header" in response.headers["warning"]
    assert shared.files() == before


def test_405_names_every_method_of_the_path(shared: Pacs, study: list[Sample]) -> None:
    studies = shared.http.delete(shared.base + "/studies")
    instance = shared.http.put(shared.base + instance_path(study[0]))

    assert studies.status_code == instance.status_code == 405
    assert set(studies.headers["allow"].split(", ")) == {"GET", "HEAD", "POST", "OPTIONS"}
    assert set(instance.headers["allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    assert studies.headers["warning"].startswith("299 pacs ")


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/studies", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("/studies/1.2.3/series/1.2.4/instances/1.2.5/frames/1", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_options_answers_204_with_allow(shared: Pacs, path: str, methods: set[str]) -> None:
    response = shared.http.options(shared.base + path)

    assert response.status_code == 204
    assert set(response.headers["allow"].split(", ")) == methods
    assert response.content == b""
