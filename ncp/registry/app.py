"""The registry role: MHD Document Recipient (ITI-65) + Document Responder (ITI-67/68) + Patient search.

Routes (under ``/fhir``, FHIR R4 JSON):

=========================================  ==============================================
``POST /fhir``                             ITI-65 Provide Document Bundle (transaction)
``GET  /fhir/DocumentReference``           ITI-67 Find Document References
``POST /fhir/DocumentReference/_search``   ITI-67, form-encoded parameters
``GET  /fhir/DocumentReference/{id}``      read (410 once deleted)
``DELETE /fhir/DocumentReference/{id}``    mark entered-in-error (testbed administration)
``GET  /fhir/Binary/{id}``                 ITI-68 Retrieve Document (negotiated on Accept)
``GET  /fhir/Patient``, ``/Patient/{id}``  PDQm-style search and read
``GET  /fhir/metadata``                    CapabilityStatement
``GET  /health``                           liveness + counts
=========================================  ==============================================
"""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ncp.bodytimeout import BodyTimeout
from ncp.errors import fhir_exception_handlers
from ncp.registry import iti65, iti67, iti68, pdqm
from ncp.registry.fhirhttp import Registry, check_format, fhir_response
from ncp.registry.settings import RegistrySettings
from ncp.registry.store import Store

__all__ = ["RegistrySettings", "capability_statement", "create_registry_app"]


def create_registry_app(settings: RegistrySettings) -> Starlette:
    """One registry: its SQLite file is opened (and created) here; state lives on ``app.state``."""
    routes = [
        Route("/fhir", iti65.provide_document_bundle, methods=["POST"]),
        Route("/fhir/", iti65.provide_document_bundle, methods=["POST"]),
        Route("/fhir/metadata", _metadata, methods=["GET"]),
        Route("/fhir/DocumentReference", iti67.search_document_references, methods=["GET"]),
        Route("/fhir/DocumentReference/_search", iti67.search_document_references, methods=["POST"]),
        Route("/fhir/DocumentReference/{id}", iti67.read_document_reference, methods=["GET"]),
        Route("/fhir/DocumentReference/{id}", iti67.delete_document_reference, methods=["DELETE"]),
        Route("/fhir/Binary/{id}", iti68.retrieve_document, methods=["GET"]),
        Route("/fhir/Patient", pdqm.search_patients, methods=["GET"]),
        Route("/fhir/Patient/{id}", pdqm.read_patient, methods=["GET"]),
        Route("/health", _health, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(BodyTimeout)],
        exception_handlers=fhir_exception_handlers(),
    )
    app.state.registry = Registry(settings, Store(settings.db_path))
    return app


async def _metadata(request: Request) -> Response:
    check_format(request)
    return fhir_response(capability_statement(Registry.of(request).base))


async def _health(request: Request) -> Response:
    registry = Registry.of(request)
    counts = await run_in_threadpool(registry.store.counts)
    body = {"status": "ok", "home_community_id": registry.settings.home_community_id, **counts}
    return Response(json.dumps(body), media_type="application/json")


def _search_params(params: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": name, "type": kind} for name, kind in params.items()]


def capability_statement(base: str) -> dict[str, Any]:
    """What this server implements (ITI TF-2x Z.3), generated from the parameter tables it parses with."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-01-01",
        "kind": "instance",
        "instantiates": [
            "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentRecipient",
            "https://profiles.ihe.net/ITI/MHD/CapabilityStatement/IHE.MHD.DocumentResponder",
        ],
        "software": {"name": "xcwado-testbed registry"},
        "implementation": {"description": "MHD document registry/repository (SQLite)", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "interaction": [{"code": "transaction"}],
                "resource": [
                    {
                        "type": "DocumentReference",
                        "interaction": [{"code": "read"}, {"code": "search-type"}, {"code": "delete"}],
                        "searchParam": _search_params(iti67.SEARCH_PARAMS),
                    },
                    {"type": "Binary", "interaction": [{"code": "read"}]},
                    {
                        "type": "Patient",
                        "interaction": [{"code": "read"}, {"code": "search-type"}],
                        "searchParam": _search_params(pdqm.PATIENT_SEARCH_PARAMS),
                    },
                    {"type": "List", "interaction": [{"code": "create"}]},
                ],
            }
        ],
    }
