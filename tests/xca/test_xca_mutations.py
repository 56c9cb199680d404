"""Whatever bytes reach a Responding Gateway, the answer is a SOAP envelope (or an MTOM answer) and never a
5xx: valid ITI-38 and ITI-39 messages with random bytes replaced, deleted or inserted."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xca_support import NORTH
from xds_support import BYTE_EDITS, MR, PATIENT_ISSUER, REPOSITORY, assert_soap_answer, mutate, patient_params

from ncp.registry.xca import iti38, iti39
from ncp.registry.xca.responding import create_responding_app
from ncp.registry.xca.settings import QUERY_PATH, RETRIEVE_PATH
from ncp.registry.xds import iti18
from ncp.registry.xds.settings import XdsSettings
from ncp.server import serve_in_thread
from ncp.soapcore import soap_message

HOME = f"urn:oid:{NORTH}"
MESSAGES = [
    (
        QUERY_PATH,
        soap_message(iti38.request(HOME, iti18.FIND_DOCUMENTS, patient_params()), action=iti38.ACTION),
    ),
    (
        RETRIEVE_PATH,
        soap_message(iti39.request(HOME, REPOSITORY, MR.manifest_sop_instance_uid), action=iti39.ACTION),
    ),
]


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Responding Gateway for every example (hypothesis runs them inside one test call)."""
    db = Path(tmp_path_factory.mktemp("xca-mutations")) / "xds.sqlite"
    with serve_in_thread(create_responding_app(XdsSettings(db, NORTH, REPOSITORY, PATIENT_ISSUER))) as url:
        yield url


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One client for every example: building one costs more than the request it makes."""
    with httpx.Client(timeout=30) as client:
        yield client


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.sampled_from(range(len(MESSAGES))),
    edits=BYTE_EDITS,
)
def test_mutated_messages_are_never_a_server_error(
    http: httpx.Client, base: str, which: int, edits: list[tuple[int, int, bytes]]
) -> None:
    path, message = MESSAGES[which]
    response = http.post(
        f"{base}{path}",
        content=mutate(message.body, edits),
        headers={"content-type": message.content_type},
    )
    assert_soap_answer(response)
