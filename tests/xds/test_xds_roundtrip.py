"""An imaging source publishes a report and a KOS manifest with the MCWG keys (ITI-41, MTOM); a consumer
finds them by level-1 keys and by targeted keys (ITI-18) and retrieves them byte-identical (ITI-43).
Every message both sides exchange is valid against the official OASIS ebRS/ebRIM 3.0 and IHE XDS.b
schemas (tests/data/xds-schemas)."""

from __future__ import annotations

import hashlib

import httpx
import pytest
from lxml import etree
from xds_support import (
    ACCESSION_ISSUER,
    CT,
    CT_REPORT,
    HCID,
    IHE,
    MR,
    PLACER_ISSUER,
    REPOSITORY,
    RS,
    assert_valid,
    find,
    patient_params,
    post,
    retrieve,
    study_documents,
    submission_request,
    unique_ids,
)

from ncp.registry.xds import iti18, iti41, iti43
from ncp.registry.xds.ebrim import SUCCESS, cxi
from ncp.registry.xds.iti18 import FIND_DOCUMENTS, FIND_DOCUMENTS_BY_REFERENCE_ID, GET_DOCUMENTS

HOME = f"urn:oid:{HCID}"
CT_KOS, CT_PDF = (e.unique_id for e, _ in study_documents(CT, CT_REPORT))
MR_KOS = study_documents(MR)[0][0].unique_id


@pytest.fixture
def published(xds: str, http: httpx.Client, schema: etree.XMLSchema) -> str:
    """The CT (manifest + report) and the MR (manifest) published in two ITI-41 submissions."""
    for docs in (study_documents(CT, CT_REPORT), study_documents(MR)):
        body, parts = submission_request(docs)
        assert_valid(schema, body, dict(parts))
        answer = post(http, f"{xds}/xds/repository", body, iti41.ACTION, parts)
        assert answer.status == 200
        assert answer.header("Action") == iti41.RESPONSE_ACTION
        assert answer.body.tag == f"{{{RS}}}RegistryResponse"
        assert answer.body.get("status") == SUCCESS, answer.errors()
        assert_valid(schema, answer.body)
    return xds


def test_find_documents_by_modality_event_code(
    published: str, http: httpx.Client, schema: etree.XMLSchema
) -> None:
    answer = find(
        http,
        published,
        FIND_DOCUMENTS,
        patient_params(("$XDSDocumentEntryEventCodeList", ["CT^^1.2.840.10008.2.16.4"])),
    )
    assert answer.header("Action") == "urn:ihe:iti:2007:RegistryStoredQueryResponse"
    assert answer.body.get("status") == SUCCESS
    assert unique_ids(answer) == [CT_KOS, CT_PDF]
    assert_valid(schema, answer.body)


def test_find_documents_by_anatomical_region_and_type(published: str, http: httpx.Client) -> None:
    region = ("$XDSDocumentEntryEventCodeList", ["774007^^2.16.840.1.113883.6.96"])
    assert unique_ids(find(http, published, FIND_DOCUMENTS, patient_params(region))) == [MR_KOS]
    manifests = ("$XDSDocumentEntryTypeCode", ["18748-4^^2.16.840.1.113883.6.1"])
    assert unique_ids(find(http, published, FIND_DOCUMENTS, patient_params(manifests))) == [CT_KOS, MR_KOS]


def test_event_code_slots_are_anded_values_ored(published: str, http: httpx.Client) -> None:
    ct_or_mr = ("$XDSDocumentEntryEventCodeList", ["CT^^1.2.840.10008.2.16.4", "MR^^1.2.840.10008.2.16.4"])
    head = ("$XDSDocumentEntryEventCodeList", ["774007^^2.16.840.1.113883.6.96"])
    assert unique_ids(find(http, published, FIND_DOCUMENTS, patient_params(ct_or_mr))) == [
        CT_KOS,
        CT_PDF,
        MR_KOS,
    ]
    assert unique_ids(find(http, published, FIND_DOCUMENTS, patient_params(ct_or_mr, head))) == [MR_KOS]


def test_creation_time_range_is_from_inclusive_to_exclusive(published: str, http: httpx.Client) -> None:
    day_one = (
        ("$XDSDocumentEntryCreationTimeFrom", "20240115"),
        ("$XDSDocumentEntryCreationTimeTo", "20240116"),
    )
    assert unique_ids(find(http, published, FIND_DOCUMENTS, patient_params(*day_one))) == [CT_KOS, MR_KOS]


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        (cxi("ACC-CT-1", "urn:ihe:iti:xds:2013:accession", ACCESSION_ISSUER), [CT_KOS, CT_PDF]),
        (cxi("ACC-MR-2", "urn:ihe:iti:xds:2013:accession", ACCESSION_ISSUER), [MR_KOS]),
        (cxi("ORD-2", "urn:ihe:iti:xds:2013:order", PLACER_ISSUER), [MR_KOS]),
        (cxi(CT.study_instance_uid, "urn:ihe:iti:xds:2016:studyInstanceUID"), [CT_KOS, CT_PDF]),
        (cxi("ACC-CT-1", "urn:ihe:iti:xds:2013:accession", "2.999.9"), []),  # another issuer's accession
    ],
    ids=["accession", "second-accession-of-m-n", "order", "study-instance-uid", "other-issuer"],
)
def test_find_documents_by_reference_id(
    published: str, http: httpx.Client, schema: etree.XMLSchema, reference: str, expected: list[str]
) -> None:
    params = patient_params(("$XDSDocumentEntryReferenceIdList", [reference]))
    answer = find(http, published, FIND_DOCUMENTS_BY_REFERENCE_ID, params)
    assert answer.body.get("status") == SUCCESS
    assert unique_ids(answer) == expected
    assert_valid(schema, answer.body)


def test_leaf_class_entry_carries_the_mcwg_keys_and_home(published: str, http: httpx.Client) -> None:
    answer = find(http, published, GET_DOCUMENTS, [("$XDSDocumentEntryUniqueId", [CT_KOS])])
    (entry,) = answer.body.iter("{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}ExtrinsicObject")
    assert entry.get("home") == HOME
    assert entry.get("mimeType") == "application/dicom"
    slots = {s.get("name"): [v.text for v in s.iter("{*}Value")] for s in entry.findall("{*}Slot")}
    assert slots["urn:ihe:iti:xds:2013:referenceIdList"] == [
        f"ACC-CT-1^^^&{ACCESSION_ISSUER}&ISO^urn:ihe:iti:xds:2013:accession",
        f"ORD-1^^^&{PLACER_ISSUER}&ISO^urn:ihe:iti:xds:2013:order",
        f"{CT.study_instance_uid}^^^^urn:ihe:iti:xds:2016:studyInstanceUID",
    ]
    assert slots["repositoryUniqueId"] == [REPOSITORY]
    kos = study_documents(CT)[0][1]
    assert slots["hash"] == [hashlib.sha1(kos).hexdigest()] and slots["size"] == [str(len(kos))]
    events = [
        c.get("nodeRepresentation")
        for c in entry.findall("{*}Classification")
        if c.get("classificationScheme") == "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
    ]
    assert events == ["CT", "67734004", "24627-2"]  # modality, anatomical region, procedure


def test_object_ref_answer_names_entry_uuids_with_home(
    published: str, http: httpx.Client, schema: etree.XMLSchema
) -> None:
    answer = find(http, published, FIND_DOCUMENTS, patient_params(), return_type="ObjectRef")
    refs = answer.body.findall("{*}RegistryObjectList/{*}ObjectRef")
    assert len(refs) == 3 and all(
        r.get("id", "").startswith("urn:uuid:") and r.get("home") == HOME for r in refs
    )
    by_uuid = find(
        http, published, GET_DOCUMENTS, [("$XDSDocumentEntryEntryUUID", [r.get("id", "") for r in refs])]
    )
    assert sorted(unique_ids(by_uuid)) == sorted([CT_KOS, CT_PDF, MR_KOS])
    assert_valid(schema, answer.body)


def test_retrieve_document_set_is_mtom_and_byte_identical(
    published: str, http: httpx.Client, schema: etree.XMLSchema
) -> None:
    answer = retrieve(http, published, [CT_KOS, CT_PDF], home=HOME)
    assert answer.status == 200 and answer.content_type.startswith("multipart/related")
    assert 'type="application/xop+xml"' in answer.content_type
    assert answer.header("Action") == "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
    assert answer.body.find(f"{{{RS}}}RegistryResponse").get("status") == SUCCESS  # type: ignore[union-attr]
    expected = {e.unique_id: (e.mime_type, data) for e, data in study_documents(CT, CT_REPORT)}
    got = {}
    for response in answer.body.iter(f"{{{IHE}}}DocumentResponse"):
        href = response.find(f"{{{IHE}}}Document/{{*}}Include").get("href", "")  # type: ignore[union-attr]
        uid = response.findtext(f"{{{IHE}}}DocumentUniqueId")
        got[uid] = (response.findtext(f"{{{IHE}}}mimeType"), answer.parts[href[4:]])
        assert response.findtext(f"{{{IHE}}}HomeCommunityId") == HOME
        assert response.findtext(f"{{{IHE}}}RepositoryUniqueId") == REPOSITORY
    assert got == expected
    assert_valid(schema, answer.body, answer.parts)


def test_inline_base64_submission_is_accepted_too(
    xds: str, http: httpx.Client, schema: etree.XMLSchema
) -> None:
    """ITI-41 with the documents inline (the XOP infoset without optimisation) stores the same bytes."""
    body, parts = submission_request(study_documents(MR), mtom=False)
    assert parts == []
    assert_valid(schema, body)
    answer = post(http, f"{xds}/xds/repository", body, iti41.ACTION)
    assert answer.body.get("status") == SUCCESS, answer.errors()
    assert list(retrieve(http, xds, [MR_KOS]).parts.values()) == [study_documents(MR)[0][1]]


def test_partial_success_names_the_missing_document_with_location(published: str, http: httpx.Client) -> None:
    answer = retrieve(http, published, [CT_KOS, "2.25.999"])
    response = answer.body.find(f"{{{RS}}}RegistryResponse")
    assert (
        response is not None
        and response.get("status") == "urn:ihe:iti:2007:ResponseStatusType:PartialSuccess"
    )
    assert [(e["errorCode"], e["location"]) for e in answer.errors()] == [("XDSDocumentUniqueIdError", HOME)]
    assert len(answer.parts) == 1


def test_the_schemas_do_refuse_what_is_not_xds(schema: etree.XMLSchema) -> None:
    """The validator above is not vacuous: a response without status, an entry whose classification
    names no classified object, and a document request without DocumentUniqueId are all refused."""
    body, parts = submission_request(study_documents(MR))
    no_status = etree.Element(f"{{{RS}}}RegistryResponse")
    classification = next(body.iter("{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}Classification"))
    del classification.attrib["classifiedObject"]
    request = etree.fromstring(
        f'<ihe:RetrieveDocumentSetRequest xmlns:ihe="{IHE}"><ihe:DocumentRequest>'
        f"<ihe:RepositoryUniqueId>{REPOSITORY}</ihe:RepositoryUniqueId></ihe:DocumentRequest>"
        "</ihe:RetrieveDocumentSetRequest>"
    )
    for element, attachments in ((no_status, None), (body, dict(parts)), (request, None)):
        with pytest.raises(AssertionError):
            assert_valid(schema, element, attachments)


def test_the_requests_a_consumer_sends_are_schema_valid(schema: etree.XMLSchema) -> None:
    """ITI-18 (every stored query, both return types) and ITI-43 requests as ncp.registry.xds builds them."""
    reference = ("$XDSDocumentEntryReferenceIdList", [cxi("ACC-CT-1", "urn:ihe:iti:xds:2013:accession")])
    for query_id, params in (
        (FIND_DOCUMENTS, patient_params(("$XDSDocumentEntryCreationTimeFrom", "2024"))),
        (FIND_DOCUMENTS_BY_REFERENCE_ID, patient_params(reference)),
        (GET_DOCUMENTS, [("$XDSDocumentEntryUniqueId", [CT_KOS, MR_KOS])]),
    ):
        for return_type in ("LeafClass", "ObjectRef"):
            assert_valid(schema, iti18.stored_query_request(query_id, params, return_type=return_type))
    assert_valid(schema, iti43.retrieve_request([(HOME, REPOSITORY, CT_KOS), (None, REPOSITORY, MR_KOS)]))
