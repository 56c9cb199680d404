"""The clinician's pages: sign in, identify the patient, find documents, read a report, open a study.

Every page is server-rendered by Jinja2 with autoescape on: names, descriptions and report text from
data are always text. Every form carries the session's CSRF token; every POST also refuses a
cross-site origin (OWASP CSRF cheat sheet: synchronizer token + standard headers).
"""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Environment, PackageLoader
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ncp.codes import ACQUISITION_MODALITIES, ANATOMICAL_REGIONS
from ncp.consumer.client import ImagingConsumer
from ncp.consumer.documents import DocumentEntry
from ncp.dicom.kos import read_manifest
from ncp.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from ncp.model import Manifest
from ncp.portal.render import CT_PRESETS
from ncp.portal.sessions import Patient, Session, SessionStore
from ncp.portal.settings import PortalSettings
from ncp.portal.upstream import Gateway

__all__ = ["BASE", "COOKIE", "Pages", "template_environment"]

BASE = "/portal"
COOKIE = "portal_session"
_FORM_LIMIT = 8  # fields per form: a handful, never more
_TAG = re.compile(r"<[^>]*>")


def template_environment() -> Environment:
    env = Environment(loader=PackageLoader("ncp.portal", "templates"), autoescape=True)
    env.filters["region"] = lambda code: ANATOMICAL_REGIONS.get(code, (code, ""))[0]
    return env


class Pages:
    """The portal's HTML routes over one session store and one gateway (both app state)."""

    def __init__(self, settings: PortalSettings, store: SessionStore, env: Environment) -> None:
        self.settings, self.store, self.env = settings, store, env

    # -- plumbing shared with the viewer -----------------------------------------------------------
    def page(self, request: Request, template: str, code: int = 200, **context: Any) -> HTMLResponse:
        session = context.pop("session", None) or self.session(request)
        html = self.env.get_template(template).render(
            base=BASE, country=self.settings.country, session=session, **context
        )
        return HTMLResponse(html, status_code=code)

    def session(self, request: Request) -> Session | None:
        return self.store.get(request.cookies.get(COOKIE))

    def signed_in(self, request: Request) -> Session:
        session = self.session(request)
        if session is None or session.bearer is None:
            raise Unauthorized("you are not signed in, or your session has ended: sign in again")
        return session

    def treating(self, request: Request) -> tuple[Session, Patient]:
        session = self.signed_in(request)
        if session.patient is None or session.treatment_token is None:
            raise Forbidden("no treatment context is open: identify the patient first")
        return session, session.patient

    def with_cookie(self, response: Response, session: Session) -> Response:
        response.set_cookie(
            COOKIE,
            session.id,
            path=BASE,
            httponly=True,
            samesite="strict",
            secure=self.settings.secure_cookie,
        )
        return response

    def gateway(self, request: Request) -> Gateway:
        gateway: Gateway = request.app.state.gateway
        return gateway

    async def form(self, request: Request, session: Session | None) -> dict[str, str]:
        """A same-origin form of this session, as text fields; a cross-site or tokenless post is 403."""
        site = request.headers.get("sec-fetch-site")
        origin = request.headers.get("origin")
        ours = {request.headers.get("host"), self.settings.public_host} - {""}
        if site == "cross-site" or (origin and urlsplit(origin).netloc not in ours):
            raise Forbidden("a form from another site is refused (cross-site request)")
        form = await request.form(max_files=0, max_fields=_FORM_LIMIT)
        values = {k: v for k, v in form.multi_items() if isinstance(v, str)}
        if session is None or not session.csrf_ok(values.get("csrf")):
            raise Forbidden("this form is not from your current session: reload the page and try again")
        return values

    # -- sign in and out ---------------------------------------------------------------------------
    async def home(self, request: Request) -> Response:
        session = self.session(request)
        if session is not None and session.bearer:
            return RedirectResponse(f"{BASE}/documents" if session.patient else f"{BASE}/patient", 303)
        session = session or self.store.new()
        return self.with_cookie(self.page(request, "signin.html", session=session), session)

    async def sign_in(self, request: Request) -> Response:
        session = self.session(request)
        form = await self.form(request, session)
        assert session is not None
        token, lifetime = await self.gateway(request).hcp_token(
            _field(form, "subject"), _field(form, "organisation"), form.get("role", "2211")
        )
        session = self.store.rotate(session)
        session.user, session.hcp_token = _field(form, "subject"), token
        session.expires_at = _deadline(lifetime)
        return self.with_cookie(RedirectResponse(f"{BASE}/patient", 303), session)

    async def sign_out(self, request: Request) -> Response:
        session = self.session(request)
        await self.form(request, session)
        assert session is not None
        self.store.end(session)
        response = RedirectResponse(f"{BASE}/", 303)
        response.delete_cookie(COOKIE, path=BASE, httponly=True, samesite="strict")
        return response

    # -- identify the patient, open the treatment context -----------------------------------------
    async def patient_form(self, request: Request) -> Response:
        self.signed_in(request)
        return self.page(request, "patient.html", countries=self.settings.countries)

    async def identify(self, request: Request) -> Response:
        session = self.signed_in(request)
        form = await self.form(request, session)
        issuer, patient_id = form.get("issuer", ""), _field(form, "patient_id")
        known = {i: code for code, _, i in self.settings.countries}
        if issuer not in known:
            raise InvalidRequest("choose the issuing country from the list")
        gateway, hcp = self.gateway(request), session.hcp_token or ""
        found = await gateway.identify(hcp, issuer, patient_id)
        if found is None:
            message = f"No patient {patient_id} is known to {known[issuer]}."
            return self.page(request, "patient.html", 404, countries=self.settings.countries, message=message)
        token, lifetime = await gateway.treatment_token(hcp, issuer, patient_id)
        session.treatment_token, session.expires_at = token, _deadline(lifetime)  # ends with the context
        session.patient = Patient(issuer, patient_id, _name(found), found.get("birthDate", ""), known[issuer])
        session.documents.clear()
        session.manifests.clear()
        session.cache.clear()
        return RedirectResponse(f"{BASE}/documents", 303)

    # -- ITI-67 with level-1 filters, level-2 selection --------------------------------------------
    async def documents(self, request: Request) -> Response:
        session, patient = self.treating(request)
        query = request.query_params
        region, modality, procedure = (query.get(k, "") for k in ("region", "modality", "procedure"))
        if (region and region not in ANATOMICAL_REGIONS) or (
            modality and modality not in ACQUISITION_MODALITIES
        ):
            raise InvalidRequest("choose the region and the modality from the lists")
        found = await self.gateway(request).documents(
            session.treatment_token or "", patient.issuer, patient.id, modality=modality, region=region
        )
        session.documents.update({d.id: d for d in found})
        procedures = sorted({p for d in found for p in d.procedures})
        shown = ImagingConsumer.select(found, procedure=procedure) if procedure else found
        return self.page(
            request,
            "documents.html",
            documents=sorted(shown, key=lambda d: d.period_start or "", reverse=True),
            regions=[(code, meaning) for code, (meaning, _) in ANATOMICAL_REGIONS.items()],
            modalities=list(ACQUISITION_MODALITIES.items()),
            procedures=procedures,
            region=region,
            modality=modality,
            procedure=procedure,
        )

    def entry(self, session: Session, doc_id: str, kind: str) -> DocumentEntry:
        entry = session.documents.get(doc_id)
        if entry is None or entry.kind != kind:
            raise NotFound(f"no {kind} {doc_id!r} among this patient's documents: search again")
        return entry

    # -- the report (ITI-68) -----------------------------------------------------------------------
    async def report(self, request: Request) -> Response:
        session, _ = self.treating(request)
        entry = self.entry(session, request.path_params["doc"], "report")
        fhir = None
        if "application/fhir+json" in entry.urls:
            got = await self.gateway(request).document(session.bearer or "", entry, "application/fhir+json")
            fhir = fhir_sections(_json(got.body))
        return self.page(request, "report.html", entry=entry, fhir=fhir)

    async def report_content(self, request: Request) -> Response:
        session, _ = self.treating(request)
        entry = self.entry(session, request.path_params["doc"], "report")
        got = await self.gateway(request).document(session.bearer or "", entry, "application/pdf")
        if got.media_type != "application/pdf":
            raise NotFound("the report has no PDF rendition")
        return Response(got.body, media_type="application/pdf", headers={"Content-Disposition": "inline"})

    # -- the study: the KOS manifest's series ------------------------------------------------------
    async def manifest(
        self, request: Request, session: Session, doc_id: str
    ) -> tuple[DocumentEntry, Manifest]:
        entry = self.entry(session, doc_id, "manifest")
        if doc_id not in session.manifests:
            got = await self.gateway(request).document(session.bearer or "", entry, "application/dicom")
            session.manifests[doc_id] = await run_in_threadpool(read_manifest, got.body)
        return entry, session.manifests[doc_id]

    async def study(self, request: Request) -> Response:
        session, _ = self.treating(request)
        entry, manifest = await self.manifest(request, session, request.path_params["doc"])
        return self.page(request, "study.html", entry=entry, manifest=manifest)

    async def viewer(self, request: Request) -> Response:
        session, _ = self.treating(request)
        doc = request.path_params["doc"]
        entry, manifest = await self.manifest(request, session, doc)
        series = next(
            (s for s in manifest.series if s.series_instance_uid == request.path_params["series"]), None
        )
        if series is None:
            raise NotFound("the manifest references no such series")
        option = request.query_params.get("option", "hub")
        if option not in OPTIONS:
            raise InvalidRequest("the viewing option is 'hub' or 'source'")
        slices = [
            f"{BASE}/image/{option}/{doc}/{series.series_instance_uid}/{i.sop_instance_uid}"
            for i in sorted(series.instances, key=lambda i: i.instance_number or 0)
        ]
        return self.page(
            request,
            "viewer.html",
            entry=entry,
            series=series,
            option=option,
            option_label=OPTIONS[option],
            slices=slices,
            presets=list(CT_PRESETS) if series.modality == "CT" else ["default"],
        )


OPTIONS = {"hub": "central hub (MCWG 1.7.2)", "source": "source server (MCWG 1.7.3)"}


def fhir_sections(document: Any) -> list[tuple[str, str]]:
    """A FHIR report document as (title, text) pairs: the Composition's sections, as plain text."""
    entries = document.get("entry", []) if isinstance(document, dict) else []
    resources = [e.get("resource", {}) for e in entries if isinstance(e, dict)]
    composition: dict[str, Any] = next((r for r in resources if r.get("resourceType") == "Composition"), {})
    sections = [
        (str(s.get("title", "")), _TAG.sub(" ", str(s.get("text", {}).get("div", ""))).strip())
        for s in composition.get("section", [])
    ]
    title = str(composition.get("title", "Report"))
    return [(title, ""), *sections] if sections else [(title, "the document has no sections")]


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return {}


def _field(form: dict[str, str], name: str) -> str:
    value = form.get(name, "").strip()
    if not value or len(value) > 64:
        raise InvalidRequest(f"{name.replace('_', ' ')} is required (at most 64 characters)")
    return value


def _name(patient: dict[str, Any]) -> str:
    names = patient.get("name") or [{}]
    first = names[0] if isinstance(names[0], dict) else {}
    given = " ".join(str(g) for g in first.get("given", []))
    return f"{given} {first.get('family', '')}".strip() or "(no name)"


def _deadline(lifetime: float) -> float:
    return time.time() + lifetime
