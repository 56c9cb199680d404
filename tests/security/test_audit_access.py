"""The audit trail is protected and complete (issue 11): only an auditor reads it, searches page with
absolute links taken from configuration, every entry's ``fullUrl`` reads its AuditEvent, a refusal records
why, the audited client is the TCP peer, and no log line carries a token or a patient's name.

Real HTTP against real federations: a secured one in threads, an open one (security off), and a secured
one whose roles run as processes writing ``run_dir/logs/*.log``.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir.resources.R4B.auditevent import AuditEvent
from fhir.resources.R4B.bundle import Bundle

from ncp.consumer.client import ImagingConsumer
from ncp.federation import Federation
from ncp.model import StudyRecord
from ncp.publish import Published, seed_federation
from ncp.security.audit import AUDIT_SCOPE
from ncp.security.pki import FederationPki

ACCEPT = {"Accept": 'multipart/related; type="application/dicom"'}
AUDIT = "/fhir/AuditEvent"
FOREIGN_ADDRESS = "203.0.113.9"  # TEST-NET-3 (RFC 5737): never a real peer


@dataclass
class Running:
    fed: Federation
    published: dict[str, Published]

    def gateway(self, code: str) -> str:
        return self.fed.plan.endpoints[code].gateway

    def border(self, code: str) -> str:
        return self.fed.plan.endpoints[code].border

    @property
    def pki(self) -> FederationPki:
        assert self.fed.plan.pki_dir is not None
        return FederationPki.load(self.fed.plan.pki_dir)

    def hcid(self, code: str) -> str:
        return self.fed.topology.country(code).home_community_id

    def study(self, index: int = 0) -> StudyRecord:
        return self.published["FR"].data.studies[index]


@contextmanager
def running(run_dir: Path, *, mode: str = "thread", secure: bool = True) -> Iterator[Running]:
    with Federation("builtin:default", run_dir, mode=mode, secure=secure) as fed:  # type: ignore[arg-type]
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        yield Running(fed, published)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with running(tmp_path_factory.mktemp("audit-secure")) as run:
        yield run


# --- helpers -------------------------------------------------------------------------------------------


def hcp_token(gateway: str, scope: str | None = None) -> str:
    form = {"subject": "auditor-1", **({"scope": scope} if scope else {})}
    answer = httpx.post(f"{gateway}/idp/token", data=form)
    assert answer.status_code == 200, answer.text
    return str(answer.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def auditor(gateway: str) -> dict[str, str]:
    return bearer(hcp_token(gateway, AUDIT_SCOPE))


def search(run: Running, code: str, **params: str) -> dict[str, Any]:
    answer = httpx.get(f"{run.gateway(code)}{AUDIT}", params=params, headers=auditor(run.gateway(code)))
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def border_client(run: Running, own: str, at: str) -> httpx.Client:
    """mTLS to ``at``'s border presenting ``own``'s registered NCP client certificate."""
    return httpx.Client(verify=run.pki.client_ssl_context(own, peer=at))


def refused_queries(run: Running, rid: str, times: int, **headers: str) -> None:
    """``times`` ITI-67 searches without a token at AT's gateway: each a 401, each one audit record."""
    patient = run.study().patient
    for _ in range(times):
        answer = httpx.get(
            f"{run.gateway('AT')}/fhir/DocumentReference",
            params={"patient.identifier": f"urn:oid:{patient.issuer}|{patient.id}", "status": "current"},
            headers={"X-Request-Id": rid, **headers},
        )
        assert answer.status_code == 401


def the_event(bundle: dict[str, Any]) -> dict[str, Any]:
    assert bundle["total"] == 1, bundle
    event = dict(bundle["entry"][0]["resource"])
    AuditEvent.model_validate(event)
    return event


def failure_reasons(event: dict[str, Any]) -> list[str]:
    return [
        d["valueString"]
        for e in event.get("entity", [])
        for d in e.get("detail", [])
        if d["type"] == "failure-reason"
    ]


def treated(run: Running, index: int = 0) -> ImagingConsumer:
    study = run.study(index)
    consumer = ImagingConsumer(run.gateway("AT"))
    consumer.authenticate()
    consumer.identify(study.patient.issuer, study.patient.id)
    consumer.open_treatment_context(study.patient.issuer, study.patient.id)
    return consumer


def xc_url(run: Running, study: StudyRecord, series_uid: str | None = None) -> str:
    series = study.series[0]
    return (
        f"{run.gateway('AT')}/wado/homeCommunityId/{run.hcid('FR')}"
        f"/RetrieveLocationUID/{series.retrieve_location_uid}/studies/{study.study_instance_uid}"
        f"/series/{series_uid or series.series_instance_uid}"
    )


def outcome_issue(answer: httpx.Response) -> str:
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome" and "entry" not in body
    return str(body["issue"][0]["code"])


# --- 1. only an auditor reads the trail ------------------------------------------------------------------


@pytest.mark.parametrize("path", [AUDIT, f"{AUDIT}/some-id"])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer x.y.z", "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Basic dXNlcjpwYXNz"],
)
def test_the_trail_needs_a_valid_token(secure: Running, path: str, authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    answer = httpx.get(f"{secure.gateway('AT')}{path}", headers=headers)
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    assert outcome_issue(answer) == "login"


def test_a_token_of_another_countrys_idp_is_401_even_with_the_audit_scope(secure: Running) -> None:
    foreign = hcp_token(secure.gateway("FR"), AUDIT_SCOPE)
    answer = httpx.get(f"{secure.gateway('AT')}{AUDIT}", headers=bearer(foreign))
    assert answer.status_code == 401


@pytest.mark.parametrize("kind", ["hcp", "treatment"])
def test_a_token_without_the_audit_scope_is_403(secure: Running, kind: str) -> None:
    consumer = ImagingConsumer(secure.gateway("AT"))
    consumer.authenticate()
    if kind == "treatment":
        study = secure.study()
        consumer.open_treatment_context(study.patient.issuer, study.patient.id)
    answer = httpx.get(f"{secure.gateway('AT')}{AUDIT}", headers=consumer.headers)
    assert answer.status_code == 403
    assert "insufficient_scope" in answer.headers["www-authenticate"]
    assert outcome_issue(answer) == "forbidden"


def test_an_auditor_token_reads_the_trail(secure: Running) -> None:
    rid = f"auditor-{uuid.uuid4()}"
    refused_queries(secure, rid, 1)
    bundle = search(secure, "AT", **{"request-id": rid})
    Bundle.model_validate(bundle)
    assert [e["resource"]["subtype"][-1]["code"] for e in bundle["entry"]] == ["ITI-67"]


def test_on_the_border_the_ncps_own_certificate_is_an_auditor(secure: Running) -> None:
    with border_client(secure, "FR", "FR") as own:
        answer = own.get(f"{secure.border('FR')}{AUDIT}", params={"_count": "1"})
    assert answer.status_code == 200 and answer.json()["resourceType"] == "Bundle"


def test_on_the_border_another_ncps_certificate_is_not(secure: Running) -> None:
    with border_client(secure, "AT", "FR") as other:
        answer = other.get(f"{secure.border('FR')}{AUDIT}")
        read = other.get(f"{secure.border('FR')}{AUDIT}/some-id")
    assert (answer.status_code, read.status_code) == (403, 403)
    assert outcome_issue(answer) == "forbidden"


def test_on_the_border_an_auditor_token_of_the_country_opens_the_trail(secure: Running) -> None:
    with border_client(secure, "AT", "FR") as other:
        answer = other.get(f"{secure.border('FR')}{AUDIT}", headers=auditor(secure.gateway("FR")))
    assert answer.status_code == 200


def test_a_refused_look_at_the_trail_is_itself_audited(secure: Running) -> None:
    rid = f"peek-{uuid.uuid4()}"
    assert httpx.get(f"{secure.gateway('AT')}{AUDIT}", headers={"X-Request-Id": rid}).status_code == 401
    event = the_event(search(secure, "AT", **{"request-id": rid}))
    assert event["subtype"][-1]["code"] == "ITI-81"  # IHE Retrieve ATNA Audit Event
    assert event["outcome"] == "4" and failure_reasons(event)


def test_with_security_off_the_trail_is_open(tmp_path: Path) -> None:
    with Federation("builtin:default", tmp_path, mode="thread", secure=False) as fed:
        base = fed.plan.endpoints["AT"].gateway
        httpx.get(f"{base}/fhir/DocumentReference")
        answer = httpx.get(f"{base}{AUDIT}")
        assert answer.status_code == 200 and answer.json()["total"] >= 1
        first = answer.json()["entry"][0]
        assert httpx.get(first["fullUrl"]).json() == first["resource"]


# --- 2. paging with absolute links from configuration ------------------------------------------------


def links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}


def test_a_search_pages_with_absolute_next_and_previous_links(secure: Running) -> None:
    rid = f"pages-{uuid.uuid4()}"
    refused_queries(secure, rid, 7)
    headers = auditor(secure.gateway("AT"))
    url: str | None = f"{secure.gateway('AT')}{AUDIT}?request-id={rid}&_count=3"
    pages: list[dict[str, Any]] = []
    while url is not None and len(pages) < 5:
        assert url.startswith(f"{secure.gateway('AT')}{AUDIT}?")
        answer = httpx.get(url, headers=headers)
        assert answer.status_code == 200, answer.text
        pages.append(answer.json())
        url = links(pages[-1]).get("next")
    assert [len(p["entry"]) for p in pages] == [3, 3, 1]
    assert {p["total"] for p in pages} == {7}
    assert ["previous" in links(p) for p in pages] == [False, True, True]
    back = httpx.get(links(pages[1])["previous"], headers=headers).json()
    assert [e["fullUrl"] for e in back["entry"]] == [e["fullUrl"] for e in pages[0]["entry"]]
    ids = [e["resource"]["id"] for p in pages for e in p["entry"]]
    everything = search(secure, "AT", **{"request-id": rid})
    assert ids == [e["resource"]["id"] for e in everything["entry"]] and len(set(ids)) == 7


def test_offset_skips_entries(secure: Running) -> None:
    rid = f"offset-{uuid.uuid4()}"
    refused_queries(secure, rid, 3)
    whole = search(secure, "AT", **{"request-id": rid})
    tail = search(secure, "AT", **{"request-id": rid, "_offset": "2"})
    assert [e["fullUrl"] for e in tail["entry"]] == [e["fullUrl"] for e in whole["entry"]][2:]


@pytest.mark.parametrize("offset", ["-1", "x", "1.5", "99999999999999999999"])
def test_a_bad_offset_is_400(secure: Running, offset: str) -> None:
    answer = httpx.get(
        f"{secure.gateway('AT')}{AUDIT}", params={"_offset": offset}, headers=auditor(secure.gateway("AT"))
    )
    assert answer.status_code == 400 and outcome_issue(answer) == "invalid"


def test_links_come_from_configuration_not_from_the_host_header(secure: Running) -> None:
    rid = f"host-{uuid.uuid4()}"
    refused_queries(secure, rid, 2)
    headers = {**auditor(secure.gateway("AT")), "Host": "evil.example:666"}
    answer = httpx.get(
        f"{secure.gateway('AT')}{AUDIT}", params={"request-id": rid, "_count": "1"}, headers=headers
    )
    bundle = answer.json()
    urls = [*links(bundle).values(), *(e["fullUrl"] for e in bundle["entry"])]
    assert urls and all(u.startswith(f"{secure.gateway('AT')}{AUDIT}") for u in urls)
    assert "evil.example" not in answer.text


# --- 3. read: every fullUrl answers with its resource --------------------------------------------------


def test_every_full_url_answers_with_its_resource(secure: Running) -> None:
    rid = f"read-{uuid.uuid4()}"
    refused_queries(secure, rid, 2)
    headers = auditor(secure.gateway("AT"))
    entries = search(secure, "AT", **{"request-id": rid})["entry"]
    assert len(entries) == 2
    for entry in entries:
        answer = httpx.get(entry["fullUrl"], headers=headers)
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/fhir+json"
        assert answer.json() == entry["resource"]


def test_border_full_urls_name_the_border_and_read_over_mtls(secure: Running) -> None:
    with border_client(secure, "FR", "FR") as own:
        bundle = own.get(f"{secure.border('FR')}{AUDIT}", params={"_count": "2"}).json()
        assert bundle["entry"]
        for entry in bundle["entry"]:
            assert entry["fullUrl"] == f"{secure.border('FR')}{AUDIT}/{entry['resource']['id']}"
            assert own.get(entry["fullUrl"]).json() == entry["resource"]


def test_an_unknown_id_is_404(secure: Running) -> None:
    answer = httpx.get(f"{secure.gateway('AT')}{AUDIT}/{uuid.uuid4()}", headers=auditor(secure.gateway("AT")))
    assert answer.status_code == 404 and outcome_issue(answer) == "not-found"


# --- 4. a refusal carries its reason --------------------------------------------------------------------


def test_a_401_records_why(secure: Running) -> None:
    rid = f"why-401-{uuid.uuid4()}"
    refused_queries(secure, rid, 1)
    event = the_event(search(secure, "AT", **{"request-id": rid}))
    assert "bearer token" in event["outcomeDesc"] and event["outcomeDesc"].startswith("HTTP 401")
    assert any("bearer token" in reason for reason in failure_reasons(event))


def test_a_400_records_the_parameter_it_refused(secure: Running) -> None:
    consumer = treated(secure)
    rid = f"why-400-{uuid.uuid4()}"
    answer = httpx.get(
        xc_url(secure, secure.study(), series_uid="1.2.abc"),
        headers={**ACCEPT, **consumer.headers, "X-Request-Id": rid},
    )
    assert answer.status_code == 400
    event = the_event(search(secure, "AT", **{"request-id": rid}))
    assert "series UID" in event["outcomeDesc"] and "1.2.abc" in event["outcomeDesc"]
    assert any("series UID" in reason for reason in failure_reasons(event))


def test_a_403_at_the_border_records_why_at_both_hops(secure: Running) -> None:
    consumer = treated(secure, index=0)
    other = next(s for s in secure.published["FR"].data.studies if s.patient != secure.study(0).patient)
    rid = f"why-403-{uuid.uuid4()}"
    answer = httpx.get(xc_url(secure, other), headers={**ACCEPT, **consumer.headers, "X-Request-Id": rid})
    assert answer.status_code == 403
    with border_client(secure, "FR", "FR") as own:
        at_border = the_event(own.get(f"{secure.border('FR')}{AUDIT}", params={"request-id": rid}).json())
    at_gateway = the_event(search(secure, "AT", **{"request-id": rid}))
    for event in (at_border, at_gateway):
        assert "does not belong to the patient" in event["outcomeDesc"]
        assert any("does not belong" in reason for reason in failure_reasons(event))


# --- 6. the audited client is the TCP peer -------------------------------------------------------------


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Real-IP", "Forwarded"])
def test_the_audited_client_is_the_tcp_peer_not_a_forwarded_header(secure: Running, header: str) -> None:
    rid = f"xff-{uuid.uuid4()}"
    value = f"for={FOREIGN_ADDRESS}" if header == "Forwarded" else FOREIGN_ADDRESS
    refused_queries(secure, rid, 1, **{header: value})
    event = the_event(search(secure, "AT", **{"request-id": rid}))
    source = [a for a in event["agent"] if a["type"]["coding"][0]["code"] == "110153"]
    assert source[0]["network"]["address"] == "127.0.0.1"
    assert FOREIGN_ADDRESS not in json.dumps(event)


# --- 5. no token, assertion or patient name in any log line --------------------------------------------

JWT_SHAPED = re.compile(r"eyJ[A-Za-z0-9_-]{8,}")


def _names(published: dict[str, Published]) -> set[str]:
    people = [p for country in published.values() for p in country.data.patients]
    return {n for p in people for n in (p.family, f"{p.family}^{p.given}", f"{p.given} {p.family}")}


def _pacs_role(run: Running, study: StudyRecord) -> str:
    base = run.fed.plan.endpoints["FR"].pacs[study.series[0].retrieve_location_uid]
    port = int(base.split(":")[2].split("/")[0])
    return next(r.id for r in run.fed.plan.roles if port in r.ports)


def _exercise(run: Running) -> None:
    """The three steps, refusals, and an outage whose warnings name the URL that failed."""
    consumer = treated(run)
    study = run.study()
    entry = consumer.find(
        study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid, kind="manifest"
    )[0]
    assert consumer.retrieve_images(run.hcid("FR"), consumer.retrieve_manifest(entry)).complete
    httpx.get(xc_url(run, study), headers={**ACCEPT, "Authorization": "Bearer x.y.z"})
    httpx.post(f"{run.gateway('AT')}/idp/treatment", data={"patient_id": "NOBODY", "patient_issuer": "1.2.3"})
    with run.fed.role_down(_pacs_role(run, study)):
        answer = httpx.get(xc_url(run, study), headers={**ACCEPT, **consumer.headers})
        assert answer.status_code >= 500


def test_no_token_assertion_or_patient_name_reaches_a_log_line(tmp_path: Path) -> None:
    with running(tmp_path, mode="process") as run:
        _exercise(run)
        names = _names(run.published)
    logs = {p.name: p.read_text(errors="replace") for p in (tmp_path / "logs").glob("*.log")}
    assert logs and any("failed" in text for text in logs.values())  # the outage was logged
    for name, text in logs.items():
        assert not JWT_SHAPED.search(text), f"{name}: {JWT_SHAPED.search(text)}"
        assert "Bearer" not in text, name
        leaked = {n for n in names if re.search(rf"\b{re.escape(n)}\b", text)}
        assert not leaked, f"{name}: {sorted(leaked)}"
