"""Architecture B (federated regional registries): NCP-NO fans out and survives a region going down."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import httpx
from e2e_federations import Seeded

from ncp.gateway.app import create_border_app
from ncp.gateway.settings import GatewaySettings
from ncp.server import free_port
from ncp.topology import Endpoints


def search(border: str, issuer: str, pid: str) -> dict:  # type: ignore[type-arg]
    r = httpx.get(
        f"{border}/fhir/DocumentReference",
        params={"patient.identifier": f"urn:oid:{issuer}|{pid}", "status": "current"},
    )
    assert r.status_code == 200
    return r.json()  # type: ignore[no-any-return]


def test_fan_out_merges_every_region(three: Seeded) -> None:
    data = three.published["NO"].data
    border = three.fed.plan.endpoints["NO"].border
    for patient in data.patients:
        bundle = search(border, patient.issuer, patient.id)
        studies = {s.study_instance_uid for s in data.studies if s.patient == patient}
        got = {
            r["resource"]["masterIdentifier"]["value"]
            for r in bundle["entry"]
            if r["resource"]["resourceType"] == "DocumentReference"
            and "18748-4" in str(r["resource"]["type"])
        }
        assert len(got) == len(studies)
        assert not any(e["resource"]["resourceType"] == "OperationOutcome" for e in bundle["entry"])


def test_one_region_down_gives_the_others_plus_an_operation_outcome(
    three: Seeded, serve: Callable[..., str]
) -> None:
    endpoints = three.fed.plan.endpoints
    no = endpoints["NO"]
    dead = f"http://127.0.0.1:{free_port()}/fhir"
    degraded = dataclasses.replace(no, registries={**no.registries, "south": dead})
    settings = GatewaySettings(three.fed.topology, "NO", Endpoints({**endpoints.countries, "NO": degraded}))
    border = serve(create_border_app(settings))
    data = three.published["NO"].data
    south_rluid = three.fed.topology.country("NO").pacs[1].retrieve_location_uid
    patient = next(
        p
        for p in data.patients
        if any(s.patient == p and s.series[0].retrieve_location_uid == south_rluid for s in data.studies)
    )
    bundle = search(border, patient.issuer, patient.id)
    outcomes = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "OperationOutcome"]
    assert len(outcomes) == 1 and "south" in outcomes[0]["issue"][0]["diagnostics"]
    north_docs = [e for e in bundle["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
    healthy = search(no.border, patient.issuer, patient.id)
    healthy_docs = [e for e in healthy["entry"] if e["resource"]["resourceType"] == "DocumentReference"]
    assert len(north_docs) < len(healthy_docs)
    assert all(e["resource"]["id"].startswith("north.") for e in north_docs)
