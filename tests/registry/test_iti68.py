"""ITI-68 Retrieve Document: negotiation on Accept, 404 / 406 / 410, exact bytes (MHD 2:3.68)."""

from __future__ import annotations

import hashlib

import pytest
from registry_catalogue import CT, CT_REPORT, Published, kos_bytes, report_doc

from ncp.registry.iti68 import choose_representation, parse_accept
from ncp.registry.store import Representation

((_, PDF),) = report_doc(CT_REPORT)[1]  # MHD Minimal: one content, the PDF


def test_manifest_is_served_as_dicom_with_length_and_etag(published: Published) -> None:
    doc_id = published.manifests[CT.study_instance_uid]
    for accept in ("application/dicom", "*/*", None):
        headers = {"Accept": accept} if accept else {}
        response = published.get(f"/Binary/{doc_id}", headers=headers)
        assert response.status_code == 200, accept
        assert response.headers["content-type"] == "application/dicom"
        assert response.content == kos_bytes(CT)
        assert int(response.headers["content-length"]) == len(kos_bytes(CT))
        assert response.headers["etag"] == f'"{hashlib.sha1(kos_bytes(CT)).hexdigest()}"'


@pytest.mark.parametrize(
    ("accept", "content_type", "body"),
    [
        ("application/pdf", "application/pdf", PDF),
        ("application/pdf;q=0.5, application/fhir+json", "application/pdf", PDF),
        ("application/*;q=0.2, application/fhir+json;q=0.1", "application/pdf", PDF),
        ("*/*", "application/pdf", PDF),
        ("text/html, */*;q=0.1", "application/pdf", PDF),
    ],
)
def test_report_representation_is_negotiated(
    published: Published, accept: str, content_type: str, body: bytes
) -> None:
    doc_id = published.reports[CT.study_instance_uid]
    response = published.get(f"/Binary/{doc_id}", headers={"Accept": accept})
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == body
    assert response.headers["vary"] == "Accept"


@pytest.mark.parametrize("accept", ["application/pdf", "image/jpeg", "application/dicom;q=0, */*;q=0"])
def test_unacceptable_type_is_406(published: Published, accept: str) -> None:
    doc_id = published.manifests[CT.study_instance_uid]
    response = published.get(f"/Binary/{doc_id}", headers={"Accept": accept})
    assert response.status_code == 406
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "application/dicom" in response.json()["issue"][0]["diagnostics"]


def test_unknown_document_is_404_and_malformed_id_400(published: Published) -> None:
    assert published.get("/Binary/0123456789abcdef").status_code == 404
    assert published.get("/Binary/not%20an%20id").status_code == 400


def test_malformed_accept_is_400(published: Published) -> None:
    doc_id = published.manifests[CT.study_instance_uid]
    assert published.get(f"/Binary/{doc_id}", headers={"Accept": "dicom"}).status_code == 400
    assert published.get(f"/Binary/{doc_id}", headers={"Accept": "application/dicom;q=2"}).status_code == 400


def test_deleted_document_is_410_for_read_and_retrieve(published: Published) -> None:
    doc_id = published.reports[CT.study_instance_uid]
    assert published.client.delete(f"{published.base}/DocumentReference/{doc_id}").status_code == 204
    assert published.get(f"/Binary/{doc_id}").status_code == 410
    assert published.get(f"/DocumentReference/{doc_id}").status_code == 410
    assert published.client.delete(f"{published.base}/DocumentReference/nope").status_code == 404


def test_if_none_match_gives_304(published: Published) -> None:
    doc_id = published.manifests[CT.study_instance_uid]
    etag = published.get(f"/Binary/{doc_id}").headers["etag"]
    response = published.get(f"/Binary/{doc_id}", headers={"If-None-Match": etag})
    assert response.status_code == 304 and response.content == b""


def test_most_specific_range_decides_the_quality() -> None:
    """RFC 9110 12.5.1: ``application/pdf;q=0`` excludes PDF even though ``*/*`` allows it."""
    offered = [
        Representation(0, "application/pdf", "a", 1),
        Representation(1, "application/fhir+json", "b", 1),
    ]
    chosen = choose_representation("application/pdf;q=0, */*", offered)
    assert chosen is not None and chosen.content_type == "application/fhir+json"
    assert [r.q for r in parse_accept("a/b;q=0.3, c/*")] == [0.3, 1.0]
