"""What the per-request shortcuts (issue 16) must never change: every check still runs on every request.

A verifier remembers the tokens whose signature it checked (a consumer sends the same treatment token with
every image of a series), but a remembered token still expires, still names one patient, and a token with
the same claims and another signature is still refused. Assertions are signed without ``jwt.encode`` and
must remain standard JWS; redaction skips its regexes only for text none of them could match; a coroutine
waiting for its audit record still returns only once the record is committed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from token_clock import NOW, PATIENT, Clock

from ncp.errors import Forbidden, Unauthorized
from ncp.security.audit import AuditRecord, AuditStore, redact
from ncp.security.pki import FederationPki
from ncp.security.tokens import (
    IdentityProvider,
    NcpAssertionSigner,
    PatientRef,
    TokenVerifier,
    idp_issuer,
    ncp_id,
)


@pytest.fixture
def treatment(pki: FederationPki) -> Callable[[], str]:
    idp = IdentityProvider("AT", pki.idp_key("AT"), idp_issuer("AT"), clock=lambda: NOW)
    hcp = idp.hcp_token("dr-hofer", "221", "AKH Wien", "Hospital", ["RAD-160"])
    return lambda: idp.treatment_token(hcp, PATIENT.id, PATIENT.issuer)


def test_a_remembered_token_still_expires(
    pki: FederationPki, treatment: Callable[[], str], tick: Clock
) -> None:
    verifier = TokenVerifier(pki.trusted_idps(["AT"]), ncp_id("AT"), clock=tick)
    token = treatment()
    assert verifier.verify(token, patient=PATIENT).patient == PATIENT
    assert verifier.verify(token, patient=PATIENT).patient == PATIENT  # the second time from memory

    tick.now = NOW + 300 + 61  # the default lifetime, then the 60 s leeway
    with pytest.raises(Unauthorized, match="token expired"):
        verifier.verify(token, patient=PATIENT)


def test_a_remembered_token_still_names_only_its_patient(
    pki: FederationPki, treatment: Callable[[], str]
) -> None:
    verifier = TokenVerifier(pki.trusted_idps(["AT"]), ncp_id("AT"), clock=lambda: NOW)
    token = treatment()
    verifier.verify(token, patient=PATIENT)

    with pytest.raises(Forbidden, match="differs from the treatment context"):
        verifier.verify(token, patient=PatientRef(PATIENT.issuer, "FR-0002"))
    with pytest.raises(Forbidden, match="lacks scope"):
        verifier.verify(token, required_scopes=["ITI-67"])


def test_the_same_claims_under_another_signature_are_refused(
    pki: FederationPki, treatment: Callable[[], str]
) -> None:
    verifier = TokenVerifier(pki.trusted_idps(["AT"]), ncp_id("AT"), clock=lambda: NOW)
    token = treatment()
    verifier.verify(token)
    forged = token.rsplit(".", 1)[0] + "." + treatment().rsplit(".", 1)[1]  # another token's signature

    with pytest.raises(Unauthorized, match="invalid token signature"):
        verifier.verify(forged)


def test_an_assertion_is_a_standard_jws_that_pyjwt_verifies(
    pki: FederationPki, treatment: Callable[[], str]
) -> None:
    context = TokenVerifier(pki.trusted_idps(["AT"]), ncp_id("AT"), clock=lambda: NOW).verify(treatment())
    signer = NcpAssertionSigner("AT", pki.ncp_signing_key("AT"), clock=lambda: NOW)

    first, second = (signer.sign(context, audience=ncp_id("FR")) for _ in range(2))

    options: jwt.types.Options = {"verify_exp": False, "verify_iat": False, "verify_nbf": False}
    decoded = jwt.decode(
        first, signer.public_key, algorithms=["ES256"], audience=ncp_id("FR"), options=options
    )
    assert jwt.get_unverified_header(first) == {"alg": "ES256", "typ": "JWT"}
    assert decoded["iss"] == ncp_id("AT") and decoded["extensions"]["ihe_iua"]["person_id"].startswith(
        "FR-0001^"
    )
    assert decoded["jti"] != jwt.decode(second, options={"verify_signature": False})["jti"]  # sign() is new


@pytest.mark.parametrize(
    "text",
    [
        "GET /wado/homeCommunityId/2.999.250.1/RetrieveLocationUID/2.25.1/studies/2.25.2",
        "no context for this patient",
    ],
)
def test_text_that_no_pattern_can_match_is_kept_as_it_is(text: str) -> None:
    assert redact(text) is text


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("GET /fhir/Patient?access_token=abc.def&x=1", "GET /fhir/Patient?access_token=REDACTED&x=1"),
        ("Authorization: BEARER abcdefghijklmnop", "Authorization: BEARER REDACTED"),
        ("upstream said eyJhbGciOi.eyJzdWIi.c2ln", "upstream said REDACTED"),
        ("Ba\u017fic abcdefghijklmnop", "Ba\u017fic REDACTED"),  # U+017F folds to "s" for the regexes
    ],
)
def test_credentials_are_still_redacted(text: str, kept: str) -> None:
    assert redact(text) == kept


def test_a_coroutine_returns_once_its_record_is_committed(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.sqlite")

    async def many() -> None:
        await asyncio.gather(
            *(
                store.arecord(AuditRecord(transaction="RAD-160", outcome="0", source=f"s{i}"))
                for i in range(200)
            )
        )

    try:
        asyncio.run(many())
        assert store.count() == 200
    finally:
        store.close()


def test_a_record_whose_caller_went_away_is_committed_all_the_same(tmp_path: Path) -> None:
    store = AuditStore(tmp_path / "audit.sqlite")

    async def cancelled() -> None:
        waiting = asyncio.ensure_future(
            store.arecord(AuditRecord(transaction="RAD-160", outcome="0", source="s"))
        )
        await asyncio.sleep(0)  # queued
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting

    asyncio.run(cancelled())
    store.close()  # commits what is queued
    assert store.count() == 1
