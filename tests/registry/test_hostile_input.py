"""Whatever a client sends, the registry answers 2xx or a clear 4xx, never a 5xx."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from registry_catalogue import ALICE, Published, alice, bundle_for, post_bundle

NAMES = [
    "patient", "patient.identifier", "status", "type", "modality", "anatomical-region", "bodysite", "period",
    "date", "creation", "related", "related:identifier", "identifier", "study-instance-uid",
    "accession-number", "_count", "_offset", "_id", "event", "format", "x", "type:not", "_format",
]  # fmt: skip
VALUES = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["current", "ge2024", "le", "CT", "|", "a|b|c", "\\", ",", "urn:oid:1.2|x", "Patient/x/y"]
    ),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=6))
def test_search_never_fails_with_5xx(published: Published, params: list[tuple[str, str]]) -> None:
    response = published.get("/DocumentReference", params=[alice(), ("status", "current"), *params])
    assert response.status_code < 500, response.text
    body = response.json()
    assert body["resourceType"] in ("Bundle", "OperationOutcome")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.sampled_from(["resource", "request", "fullUrl", "entry"]),
    st.one_of(st.none(), st.integers(), st.text()),
)
def test_mangled_bundles_are_4xx_and_store_nothing(published: Published, where: str, junk: object) -> None:
    bundle = bundle_for(ALICE)
    if where == "entry":
        bundle["entry"] = junk
    else:
        bundle["entry"][2][where] = junk
    before = published.health()
    response = published.post(bundle)
    assert 400 <= response.status_code < 500, response.text
    assert published.health() == before


def test_deeply_nested_resource_is_400(published: Published) -> None:
    extension: dict[str, object] = {"url": "http://x", "valueString": "a"}
    for _ in range(150):
        extension = {"url": "http://x", "extension": [extension]}
    bundle = bundle_for(ALICE)
    bundle["entry"][2]["resource"]["extension"] = [extension]
    response = published.client.post(
        published.base, content=json.dumps(bundle), headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 400
    assert "nested" in response.json()["issue"][0]["diagnostics"]


def test_too_many_alternatives_or_parameters_are_400(published: Published) -> None:
    many = ",".join(f"C{i}" for i in range(500))
    assert published.search(alice(), ("modality", many)).status_code == 400
    assert published.search(alice(), *[("modality", "CT")] * 60).status_code == 400


def test_oversized_bundle_is_413(start_registry: Callable[..., str], http: httpx.Client) -> None:
    base = start_registry(max_bundle_bytes=4096)
    declared = post_bundle(http, base, bundle_for(ALICE))
    assert declared.status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the bound applies while reading
        yield b"{" + b" " * 5000 + b"}"

    streamed = http.post(base, content=chunks(), headers={"Content-Type": "application/fhir+json"})
    assert streamed.status_code == 413
    assert Published(base, http).health()["documents"] == 0
