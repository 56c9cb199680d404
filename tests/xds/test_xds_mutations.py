"""Whatever bytes arrive, the answer is a SOAP envelope and never a 5xx: valid ITI-18, ITI-41 (MTOM) and
ITI-43 messages with random bytes replaced, deleted or inserted, and random Content-Type damage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from xds_support import (
    BYTE_EDITS,
    HCID,
    MR,
    PATIENT_ISSUER,
    REPOSITORY,
    assert_soap_answer,
    mutate,
    patient_params,
    study_documents,
    submission_request,
)

from ncp.registry.xds import iti18, iti41, iti43
from ncp.registry.xds.app import XdsSettings, create_xds_app
from ncp.server import serve_in_thread
from ncp.soapcore import SoapMessage, mtom_message, soap_message


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One server for every example (hypothesis runs examples inside one test call)."""
    settings_ = XdsSettings(
        db_path=Path(tmp_path_factory.mktemp("xds-mutations")) / "xds.sqlite", home_community_id=HCID,
        repository_unique_id=REPOSITORY, patient_id_domain=PATIENT_ISSUER,
    )  # fmt: skip
    with serve_in_thread(create_xds_app(settings_)) as url:
        yield url


def _messages() -> list[tuple[str, SoapMessage]]:
    body, parts = submission_request(study_documents(MR))
    query = iti18.stored_query_request(iti18.FIND_DOCUMENTS, patient_params())
    retrieve = iti43.retrieve_request([(None, REPOSITORY, MR.manifest_sop_instance_uid)])
    return [
        ("/xds/registry", soap_message(query, action=iti18.ACTION)),
        ("/xds/repository", mtom_message(body, action=iti41.ACTION, attachments=parts)),
        ("/xds/repository", soap_message(retrieve, action=iti43.ACTION)),
    ]


MESSAGES = _messages()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """One client for every example: building one costs more than the request it makes."""
    with httpx.Client(timeout=30) as client:
        yield client


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    which=st.sampled_from(range(len(MESSAGES))),
    edits=BYTE_EDITS,
    type_edits=st.lists(
        st.tuples(
            st.integers(0, 200),
            st.integers(0, 8),
            st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=8),
        ),
        max_size=2,
    ),
)
def test_mutated_messages_are_never_a_server_error(
    http: httpx.Client,
    base: str,
    which: int,
    edits: list[tuple[int, int, bytes]],
    type_edits: list[tuple[int, int, str]],
) -> None:
    path, message = MESSAGES[which]
    content_type = mutate(
        message.content_type.encode(), [(at, n, text.encode()) for at, n, text in type_edits]
    )
    response = http.post(
        f"{base}{path}",
        content=mutate(message.body, edits),
        headers={"content-type": content_type.decode().strip()},  # no edge white space (RFC 9110 5.5)
    )
    assert_soap_answer(response)
