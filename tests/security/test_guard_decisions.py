"""How long a guard's decisions last: ownership answers."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ncp import fhirsearch
from ncp.errors import Forbidden
from ncp.gateway.guard import OWNERSHIP_TTL_S, Guard
from ncp.security.tokens import Claims, PatientRef, patient_ref

PATIENT = PatientRef("2.999.250.2", "FR-1")


def claims(expires_in: float, patient: PatientRef = PATIENT) -> Claims:
    """An NCP assertion's claims for a treatment context, lapsing in ``expires_in`` seconds."""
    now = datetime.now(UTC)
    return Claims(
        issuer="urn:xcwado:ncp:AT",
        subject="dr",
        audience=("urn:xcwado:ncp:FR",),
        token_id="jti",
        issued_at=now,
        expires_at=now + timedelta(seconds=expires_in),
        not_before=None,
        scopes=frozenset(),
        client_id=None,
        role="221",
        organisation=None,
        organisation_id=None,
        facility=None,
        home_community_id=None,
        purpose_of_use="TREATMENT",
        patient=patient,
        country="AT",
        origin_issuer=None,
        origin_token_id=None,
    )


class Registry:
    """Answers ownership questions like ITI-67 would, counting them."""

    def __init__(self) -> None:
        self.owned = True
        self.asked = 0

    async def owns(self, patient: PatientRef, study: str) -> bool:
        self.asked += 1
        return self.owned


def test_an_ownership_answer_is_reused_only_briefly(monkeypatch: pytest.MonkeyPatch) -> None:
    guard, registry, now = Guard("FR", None), Registry(), [1000.0]
    monkeypatch.setattr("ncp.gateway.guard.time.time", lambda: now[0])
    asyncio.run(guard.require_ownership(claims(3600), "1.2.3", registry.owns))
    asyncio.run(guard.require_ownership(claims(3600), "1.2.3", registry.owns))
    assert registry.asked == 1
    registry.owned = False  # the manifest was entered in error
    now[0] += OWNERSHIP_TTL_S
    with pytest.raises(Forbidden):
        asyncio.run(guard.require_ownership(claims(3600), "1.2.3", registry.owns))
    assert OWNERSHIP_TTL_S <= 5


def test_an_ownership_answer_never_outlives_the_assertion_that_earned_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard, registry = Guard("FR", None), Registry()
    short = claims(0.5)
    asyncio.run(guard.require_ownership(short, "1.2.3", registry.owns))
    later = short.expires_at.timestamp() + 0.01
    monkeypatch.setattr("ncp.gateway.guard.time.time", lambda: later)
    asyncio.run(guard.require_ownership(claims(3600), "1.2.3", registry.owns))
    assert registry.asked == 2


def test_owned_tells_without_asking_whether_the_check_would_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """The nginx front answers at once when :meth:`Guard.owned` is true, and asks the registries otherwise."""
    guard, registry, now = Guard("FR", None), Registry(), [1000.0]
    monkeypatch.setattr("ncp.gateway.guard.time.time", lambda: now[0])
    assert guard.owned(None, "1.2.3")  # security off: no assertion, nothing to check
    assert not guard.owned(claims(3600), "1.2.3")
    asyncio.run(guard.require_ownership(claims(3600), "1.2.3", registry.owns))
    assert guard.owned(claims(3600), "1.2.3") and not guard.owned(claims(3600), "1.2.4")
    assert not guard.owned(claims(3600, PatientRef("2.999.250.2", "FR-2")), "1.2.3")
    now[0] += OWNERSHIP_TTL_S
    assert not guard.owned(claims(3600), "1.2.3")
    assert registry.asked == 1
    with pytest.raises(Forbidden, match="no treatment context"):
        guard.owned(dataclasses.replace(claims(3600), patient=None), "1.2.3")


@given(st.text(min_size=1, max_size=64))
def test_an_escaped_value_reads_back_as_one_literal_value(value: str) -> None:
    escaped = fhirsearch.token("urn:oid:1.2", value)
    [alternative] = fhirsearch.split_alternatives("identifier", escaped)
    assert fhirsearch.split_token("identifier", alternative) == ("urn:oid:1.2", value)


@pytest.mark.parametrize("bad", ["X\\Y", "X^Y", "X&Y", "X~Y", "X|Y", "X Y", "", "é", "X\x00", "x" * 65])
def test_a_patient_id_outside_its_grammar_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="patient id"):
        patient_ref("2.999.250.2", bad)


def test_search_delimiters_inside_a_patient_id_stay_literal() -> None:
    assert patient_ref("urn:oid:2.999.250.2", "X,Y$Z").search_token() == "urn:oid:2.999.250.2|X\\,Y\\$Z"
