"""Patient search and read, PDQm ITI-78 style (docs/architecture.md, step 0).

``GET /fhir/Patient?identifier=urn:oid:{issuer}|{id}`` answers from the Patients received with
ITI-65. Strict parameter handling as for ITI-67: unknown parameters are a 400.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ncp.errors import InvalidRequest, NotFound
from ncp.registry.fhirhttp import Registry, check_format, fhir_response, validate_id
from ncp.registry.iti67 import (
    check_parameter_count,
    parse_date_alternatives,
    parse_paging,
    searchset,
    split_alternatives,
    token_alternative,
)
from ncp.registry.store import DateAlt, PatientQuery, TokenAlt

__all__ = ["PATIENT_SEARCH_PARAMS", "parse_patient_search", "read_patient", "search_patients"]

PATIENT_SEARCH_PARAMS: dict[str, str] = {
    "_id": "token",
    "identifier": "token",
    "family": "string",
    "given": "string",
    "gender": "token",
    "birthdate": "date",
}
_CONTROL = frozenset({"_count", "_offset", "_format"})
_GENDERS = frozenset({"male", "female", "other", "unknown"})


async def search_patients(request: Request) -> Response:
    registry = Registry.of(request)
    check_format(request)
    params = list(request.query_params.multi_items())
    query = parse_patient_search(params)
    paging = parse_paging(params, registry.settings)
    total, patients = await run_in_threadpool(
        registry.store.search_patients, query, offset=paging.offset, count=paging.count
    )
    entries = [
        {"fullUrl": f"{registry.base}/Patient/{p['id']}", "resource": p, "search": {"mode": "match"}}
        for p in patients
    ]
    criteria = [(k, v) for k, v in params if k not in _CONTROL]
    return fhir_response(searchset(f"{registry.base}/Patient", criteria, paging, total, entries))


async def read_patient(request: Request) -> Response:
    registry = Registry.of(request)
    check_format(request)
    patient_id = validate_id(request.path_params["id"], "Patient id")
    patient = await run_in_threadpool(registry.store.patient, patient_id)
    if patient is None:
        raise NotFound(f"Patient/{patient_id} is not known")
    return fhir_response(patient)


def parse_patient_search(params: Sequence[tuple[str, str]]) -> PatientQuery:
    ids: list[tuple[str, ...]] = []
    identifiers: list[tuple[TokenAlt, ...]] = []
    family: list[tuple[str, ...]] = []
    given: list[tuple[str, ...]] = []
    gender: list[tuple[str, ...]] = []
    birthdate: list[tuple[DateAlt, ...]] = []
    check_parameter_count(params)
    for name, value in params:
        if name in _CONTROL:
            continue
        if name not in PATIENT_SEARCH_PARAMS:
            raise InvalidRequest(
                f"unknown search parameter {name!r} for Patient "
                f"(supported: {', '.join(sorted(PATIENT_SEARCH_PARAMS))})"
            )
        alternatives = split_alternatives(name, value)
        if name == "_id":
            ids.append(tuple(validate_id(v, "_id value") for v in alternatives))
        elif name == "identifier":
            identifiers.append(tuple(token_alternative(name, v) for v in alternatives))
        elif name == "family":
            family.append(tuple(alternatives))
        elif name == "given":
            given.append(tuple(alternatives))
        elif name == "gender":
            gender.append(tuple(_gender(v) for v in alternatives))
        else:
            birthdate.append(parse_date_alternatives(name, alternatives))
    return PatientQuery(
        tuple(ids), tuple(identifiers), tuple(family), tuple(given), tuple(gender), tuple(birthdate)
    )


def _gender(value: str) -> str:
    code = value.rpartition("|")[2]
    if code not in _GENDERS:
        raise InvalidRequest(f"search parameter 'gender': {value!r} is not one of {sorted(_GENDERS)}")
    return code
