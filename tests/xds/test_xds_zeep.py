"""An unmodified SOAP client, zeep, driven only by the IHE XDS.b WSDLs (as shipped by Open eHealth IPF),
runs ITI-18 and ITI-43 against the registry/repository: SOAP 1.2, WS-Addressing from zeep's own plugin,
and the ITI-43 answer's MTOM/XOP parts resolved by zeep itself (zeep.wsdl.messages.xop)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
import zeep
from xds_support import (
    ALICE,
    CT,
    CT_REPORT,
    HCID,
    PATIENT_ISSUER,
    REPOSITORY,
    SCHEMAS,
    post,
    study_documents,
    submission_request,
)
from zeep.wsa import WsAddressingPlugin

from ncp.registry.xds import iti41
from ncp.registry.xds.iti18 import FIND_DOCUMENTS

SUCCESS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:Success"


@pytest.fixture
def published(xds: str, http: httpx.Client) -> str:
    body, parts = submission_request(study_documents(CT, CT_REPORT))
    assert post(http, f"{xds}/xds/repository", body, iti41.ACTION, parts).body.get("status") == SUCCESS
    return xds


def _service(
    wsdl: str, binding: str, address: str, *, strict: bool = True
) -> Iterator[zeep.proxy.ServiceProxy]:
    settings = zeep.Settings(strict=strict)
    client = zeep.Client(str(SCHEMAS / wsdl), plugins=[WsAddressingPlugin()], settings=settings)
    try:
        yield client.create_service(f"{{urn:ihe:iti:xds-b:2007}}{binding}", address)
    finally:
        client.transport.session.close()


def _slot(name: str, *values: str) -> dict[str, object]:
    # rim:ValueListType is a repeated sequence: zeep names it _value_1
    return {"name": name, "ValueList": {"_value_1": [{"Value": v} for v in values]}}


def test_zeep_runs_find_documents(published: str) -> None:
    """zeep does not implement XML Schema substitution groups (mvantellingen/python-zeep#321, PR #433
    unmerged), and rim:RegistryObjectList holds rim:Identifiable's substitutes (ExtrinsicObject...):
    in its default strict mode it refuses the (schema-valid, see test_xds_roundtrip) answer, so it runs
    with strict=False, which hands those elements over as parsed XML (``_raw_elements``)."""
    address = f"{published}/xds/registry"
    for registry in _service("iti18.wsdl", "DocumentRegistry_Binding_Soap12", address, strict=False):
        answer = registry.DocumentRegistry_RegistryStoredQuery(
            ResponseOption={"returnType": "LeafClass", "returnComposedObjects": True},
            AdhocQuery={
                "id": FIND_DOCUMENTS,
                "Slot": [
                    _slot("$XDSDocumentEntryPatientId", f"'{ALICE.id}^^^&{PATIENT_ISSUER}&ISO'"),
                    _slot(
                        "$XDSDocumentEntryStatus", "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
                    ),
                    _slot("$XDSDocumentEntryEventCodeList", "('67734004^^2.16.840.1.113883.6.96')"),
                ],
            },
        )
        assert answer.status == SUCCESS
        entries = answer.RegistryObjectList._raw_elements
        assert [e.tag for e in entries] == [
            "{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}ExtrinsicObject"
        ] * 2
        assert {e.get("mimeType") for e in entries} == {"application/dicom", "application/pdf"}
        assert {e.get("home") for e in entries} == {f"urn:oid:{HCID}"}


def test_zeep_retrieves_document_set_over_mtom(published: str) -> None:
    expected = {e.unique_id: data for e, data in study_documents(CT, CT_REPORT)}
    for repository in _service(
        "iti43.wsdl", "DocumentRepository_Binding_Soap12", f"{published}/xds/repository"
    ):
        answer = repository.DocumentRepository_RetrieveDocumentSet(
            DocumentRequest=[{"RepositoryUniqueId": REPOSITORY, "DocumentUniqueId": uid} for uid in expected]
        )
        assert answer.RegistryResponse.status == SUCCESS
        assert {d.DocumentUniqueId: d.Document for d in answer.DocumentResponse} == expected
