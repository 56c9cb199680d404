"""WADO-RS Retrieve (RAD-107): what STOW stored comes back byte for byte, with the right status."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable

import httpx
import pydicom
import pytest
from pacs_harness import DICOM_MULTIPART, Pacs, decode
from pacs_samples import Sample, ct_dataset, part10, sample_study

from ncp.dicom.multipart import MultipartDecoder
from ncp.dicom.uids import deterministic_uid
from ncp.errors import InvalidRequest

EVLE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def instance_path(s: Sample) -> str:
    return f"/studies/{s.study}/series/{s.series}/instances/{s.sop}"


def test_study_retrieval_returns_exactly_the_stored_bytes(shared: Pacs, study: list[Sample]) -> None:
    response = shared.get(f"/studies/{study[0].study}")

    assert response.status_code == 200
    assert "warning" not in response.headers
    media_type, *params = [p.strip() for p in response.headers["content-type"].split(";")]
    assert media_type == "multipart/related"
    assert 'type="application/dicom"' in params
    parts = decode(response)
    assert sorted(sha(p.body) for p in parts) == sorted(sha(s.data) for s in study)


def test_each_part_names_its_instance_and_transfer_syntax(shared: Pacs, study: list[Sample]) -> None:
    parts = decode(shared.get(f"/studies/{study[0].study}"))

    by_location = {p.headers["content-location"]: p for p in parts}
    for s in study:
        part = by_location[shared.base + instance_path(s)]
        assert part.body == s.data
        assert part.content_type == f"application/dicom; transfer-syntax={EVLE}"


def test_series_and_instance_retrieval_narrow_the_result(shared: Pacs, study: list[Sample]) -> None:
    first = study[0]
    series = decode(shared.get(f"/studies/{first.study}/series/{first.series}"))
    instance = decode(shared.get(instance_path(first)))

    assert sorted(sha(p.body) for p in series) == sorted(
        sha(s.data) for s in study if s.series == first.series
    )
    assert [p.body for p in instance] == [first.data]


def test_single_part_application_dicom_at_instance_level(shared: Pacs, study: list[Sample]) -> None:
    response = shared.get(instance_path(study[1]), accept="application/dicom")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/dicom")
    assert response.content == study[1].data


def test_single_part_media_type_is_not_acceptable_for_a_whole_study(
    shared: Pacs, study: list[Sample]
) -> None:
    response = shared.get(f"/studies/{study[0].study}", accept="application/dicom")

    assert response.status_code == 406
    assert response.headers["warning"].startswith("299 pacs ")


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="application/dicom"',
        "multipart/related; type=application/dicom",
        "multipart/related;type=application/dicom",
        f'multipart/related; type="application/dicom"; transfer-syntax={EVLE}',
        'multipart/related; type="application/dicom"; transfer-syntax=*',
        f"multipart/related; type=application/dicom; transfer-syntax={JPEG_BASELINE}; q=0.5, "
        "multipart/related; type=application/dicom; q=0.4",
        "*/*",
        None,
    ],
)
def test_accept_variants_that_the_stored_files_satisfy(
    shared: Pacs, study: list[Sample], accept: str | None
) -> None:
    response = shared.get(instance_path(study[0]), accept=accept)

    assert response.status_code == 200, response.text
    assert [p.body for p in decode(response)] == [study[0].data]


@pytest.mark.parametrize(
    "accept",
    [
        f'multipart/related; type="application/dicom"; transfer-syntax={JPEG_BASELINE}',
        'multipart/related; type="application/octet-stream"',
        "multipart/related; type=image/jpeg",
        "application/dicom+xml",
        "text/html",
    ],
)
def test_unsupported_accept_is_406_with_a_warning(shared: Pacs, study: list[Sample], accept: str) -> None:
    response = shared.get(f"/studies/{study[0].study}", accept=accept)

    assert response.status_code == 406
    assert response.headers["warning"].startswith("299 pacs ")


def test_malformed_transfer_syntax_parameter_is_400(shared: Pacs, study: list[Sample]) -> None:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.x'
    response = shared.get(f"/studies/{study[0].study}", accept=accept)

    assert response.status_code == 400
    assert "transfer-syntax" in response.headers["warning"]


def test_unknown_study_series_and_instance_are_404_with_a_warning(shared: Pacs, study: list[Sample]) -> None:
    s = study[0]
    unknown = deterministic_uid("unknown")
    for path in (
        f"/studies/{unknown}",
        f"/studies/{s.study}/series/{unknown}",
        f"/studies/{s.study}/series/{s.series}/instances/{unknown}",
        f"/studies/{unknown}/series/{s.series}/instances/{s.sop}",  # right instance, wrong study
    ):
        response = shared.get(path)
        assert response.status_code == 404, path
        assert unknown in response.headers["warning"]


@pytest.mark.parametrize(
    "bad_uid", ["1.2.abc", "1.02.3", "1..2", "1" * 65, "-1.2", "1.2.3 ", "1.2.中", "1.2;3"]
)
def test_malformed_uids_are_400_before_any_path_is_built(
    shared: Pacs, study: list[Sample], bad_uid: str
) -> None:
    before = shared.files()
    s = study[0]
    for path in (
        f"/studies/{bad_uid}",
        f"/studies/{s.study}/series/{bad_uid}",
        f"/studies/{s.study}/series/{s.series}/instances/{bad_uid}",
        f"/studies/{bad_uid}/metadata",
        f"/studies/{s.study}/series/{s.series}/instances/{bad_uid}/rendered",
    ):
        response = shared.get(path)
        assert response.status_code == 400, path
        assert response.headers["warning"].startswith("299 pacs ")
    assert shared.files() == before


@pytest.mark.parametrize("trick", ["%2e%2e", "1.2.3%2F..%2F..", "%2F", "..%5C..%5Cetc"])
def test_path_tricks_never_reach_the_file_store(shared: Pacs, study: list[Sample], trick: str) -> None:
    before = shared.files()
    response = shared.get(f"/studies/{study[0].study}/series/{trick}/instances/{trick}")

    assert response.status_code in (400, 404)
    assert response.headers["warning"].startswith("299 pacs ")
    assert shared.files() == before


def test_withheld_instances_give_206_and_a_warning_naming_them(
    start_pacs: Callable[..., Pacs], study: list[Sample]
) -> None:
    lost = {study[1].sop, study[4].sop}
    pacs = start_pacs(withhold=frozenset(lost))
    pacs.load(study)

    response = pacs.get(f"/studies/{study[0].study}")

    assert response.status_code == 206
    warning = response.headers["warning"]
    assert warning.startswith("299 pacs ")
    assert all(uid in warning for uid in lost)
    served = {p.body for p in decode(response)}
    assert served == {s.data for s in study if s.sop not in lost}


def test_withheld_instance_alone_is_404_and_a_series_without_any_left_is_404(
    start_pacs: Callable[..., Pacs], study: list[Sample]
) -> None:
    first_series = [s for s in study if s.series == study[0].series]
    pacs = start_pacs(withhold=frozenset(s.sop for s in first_series))
    pacs.load(study)

    instance = pacs.get(instance_path(first_series[0]))
    series = pacs.get(f"/studies/{study[0].study}/series/{study[0].series}")

    assert instance.status_code == 404
    assert series.status_code == 404
    assert all(s.sop in series.headers["warning"] for s in first_series)


def test_broken_pacs_answers_200_where_206_is_due(
    start_pacs: Callable[..., Pacs], study: list[Sample]
) -> None:
    pacs = start_pacs(withhold=frozenset({study[2].sop}), partial_as_ok=True)
    pacs.load(study)

    response = pacs.get(f"/studies/{study[0].study}")

    assert response.status_code == 200
    assert "warning" not in response.headers
    assert len(decode(response)) == len(study) - 1


def test_a_file_lost_from_disk_is_reported_like_a_withheld_one(loaded: Pacs, study: list[Sample]) -> None:
    lost = study[3]
    (loaded.storage / lost.study / lost.series / f"{lost.sop}.dcm").unlink()

    response = loaded.get(f"/studies/{lost.study}")

    assert response.status_code == 206
    assert lost.sop in response.headers["warning"]
    assert len(decode(response)) == len(study) - 1


def test_a_file_vanishing_mid_stream_truncates_the_message(pacs: Pacs) -> None:
    """After the first byte a failure aborts: the client never sees a clean short study (Data plane)."""
    big = sample_study("vanish", series=1, per_series=5, size=1024)  # 2 MB each: 8 MB before the last
    pacs.load(big)
    last = big[-1]
    with pacs.http.stream(
        "GET", pacs.base + f"/studies/{last.study}", headers={"Accept": DICOM_MULTIPART}
    ) as r:
        assert r.status_code == 200
        (pacs.storage / last.study / last.series / f"{last.sop}.dcm").unlink()
        decoder = MultipartDecoder(r.headers["content-type"])
        with pytest.raises((httpx.HTTPError, InvalidRequest)):
            for chunk in r.iter_bytes():
                decoder.feed(chunk)
            decoder.close()
    assert not decoder.complete


def test_instance_metadata_matches_the_stored_file(shared: Pacs, study: list[Sample]) -> None:
    s = study[5]
    (item,) = shared.get(instance_path(s) + "/metadata", accept=None).json()
    stored = pydicom.dcmread(io.BytesIO(s.data))

    assert item["0020000E"]["Value"] == [s.series]
    assert item["00200013"]["Value"] == [int(stored.InstanceNumber)]
    assert item["00281050"]["Value"] == [40]


def test_metadata_with_withheld_instances_is_206(
    start_pacs: Callable[..., Pacs], study: list[Sample]
) -> None:
    pacs = start_pacs(withhold=frozenset({study[0].sop}))
    pacs.load(study)

    response = pacs.get(f"/studies/{study[0].study}/metadata", accept="application/dicom+json")

    assert response.status_code == 206
    assert study[0].sop in response.headers["warning"]
    assert len(response.json()) == len(study) - 1


def test_implicit_vr_stow_is_served_as_explicit_vr_little_endian(pacs: Pacs) -> None:
    """PS3.18 8.7.3: Implicit VR Little Endian shall not be used on the Web; STOW converts it."""
    study = deterministic_uid("implicit")
    ds = ct_dataset(study, deterministic_uid("implicit-s"), deterministic_uid("implicit-i"))
    assert pacs.stow([part10(ds, implicit=True)]).status_code == 200

    (part,) = decode(pacs.get(f"/studies/{study}"))
    served = pydicom.dcmread(io.BytesIO(part.body))

    assert served.file_meta.TransferSyntaxUID == EVLE
    assert part.content_type == f"application/dicom; transfer-syntax={EVLE}"
    assert served.PixelData == ds.PixelData and served.PatientName == ds.PatientName


def test_health(pacs: Pacs) -> None:
    response = pacs.http.get(pacs.base.removesuffix("/dicom-web") + "/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_unknown_route_and_wrong_method_answer_in_dicomweb_shape(shared: Pacs, study: list[Sample]) -> None:
    missing = shared.get("/nothing-here")
    wrong = shared.http.delete(shared.base + f"/studies/{study[0].study}")

    assert missing.status_code == 404 and missing.headers["warning"].startswith("299 pacs ")
    assert wrong.status_code == 405 and wrong.headers["warning"].startswith("299 pacs ")
