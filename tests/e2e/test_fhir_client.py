"""A third-party FHIR model (fhir.resources R4B) parses every Bundle and OperationOutcome of the gateways."""

from __future__ import annotations

import httpx
import pytest
from e2e_federations import Seeded
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.operationoutcome import OperationOutcome


def _bundles(seeded: Seeded) -> list[tuple[str, dict[str, str]]]:
    study = seeded.published["FR"].data.studies[0]
    token = f"urn:oid:{study.patient.issuer}|{study.patient.id}"
    base = seeded.gateway("AT")
    return [
        (f"{base}/fhir/Patient", {"identifier": token}),
        (f"{base}/fhir/DocumentReference", {"patient.identifier": token, "status": "current"}),
        (f"{base}/fhir/DocumentReference", {"patient.identifier": token, "status": "current", "_count": "1"}),
        (
            f"{base}/fhir/DocumentReference",
            {
                "patient.identifier": token,
                "status": "current",
                "study-instance-uid": study.study_instance_uid,
            },
        ),
    ]


@pytest.mark.parametrize("index", range(4))
def test_gateway_bundles_are_valid_r4(default_mado: Seeded, index: int) -> None:
    url, params = _bundles(default_mado)[index]
    r = httpx.get(url, params=params)
    assert r.status_code == 200
    bundle = Bundle.model_validate(r.json())
    assert bundle.type == "searchset"
    assert bundle.entry, "the search found nothing to validate"
    nxt = [link.url for link in bundle.link or [] if link.relation == "next"]
    if params.get("_count") == "1":
        assert nxt and str(nxt[0]).startswith(default_mado.gateway("AT"))
        assert Bundle.model_validate(httpx.get(str(nxt[0])).json()).entry


def test_three_country_fan_out_bundle_is_valid_r4(three: Seeded) -> None:
    patient = three.published["NO"].data.patients[0]
    r = httpx.get(
        f"{three.gateway('FR')}/fhir/DocumentReference",
        params={"patient.identifier": f"urn:oid:{patient.issuer}|{patient.id}", "status": "current"},
    )
    assert r.status_code == 200
    Bundle.model_validate(r.json())


def test_gateway_errors_are_valid_operation_outcomes(default_mado: Seeded) -> None:
    r = httpx.get(f"{default_mado.gateway('AT')}/fhir/DocumentReference", params={"status": "current"})
    assert r.status_code == 400
    OperationOutcome.model_validate(r.json())
