"""Valid requests for every endpoint family, taken from a seeded federation: what the fuzzer mutates.

Country B (treatment, here AT) asks, country A (affiliation, FR) answers. A template is a request
that the federation answers with 2xx as it stands (``Fuzzer.controls`` checks it); credentials are
named (``auth``) and made when the request is sent, since tokens and assertions expire.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pydicom

from ncp.codes import TYPE_MANIFEST
from ncp.federation import Federation
from ncp.fuzz.wire import Listener
from ncp.mhd import provide_document_bundle
from ncp.model import PatientRecord, StudyRecord
from ncp.publish import Published, manifest_document
from ncp.security.pki import FederationPki

__all__ = ["BOUNDARY", "FAMILIES", "Corpus", "Template", "build_corpus"]

TREATMENT, AFFILIATION = "AT", "FR"
FHIR_JSON = "application/fhir+json"
DICOM_PARTS = 'multipart/related; type="application/dicom"'
FORM = "application/x-www-form-urlencoded"
BOUNDARY = "ncp-fuzz-6d1a3f0c9b7e4d2a"  # of every STOW-RS body; never inside a DICOM file by chance

FAMILIES = (
    "gateway ITI-78", "gateway ITI-67", "gateway ITI-68", "gateway IdP", "gateway RAD-160",
    "border ITI-78", "border ITI-67", "border ITI-68", "border RAD-160",
    "registry ITI-65", "registry ITI-67", "registry ITI-68", "registry PDQm",
    "pacs WADO-RS", "pacs QIDO-RS", "pacs STOW-RS",
)  # fmt: skip

Pairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Template:
    """A valid request. ``auth`` names its credentials: ``hcp``, ``treatment:<patient id>``,
    ``assert-hcp``, ``assert:<patient id>`` (:mod:`ncp.fuzz.credentials`)."""

    family: str
    listener: str
    path: tuple[str, ...]
    query: Pairs = ()
    headers: Pairs = ()
    auth: str = ""
    method: str = "GET"
    json: Any = None  # an ITI-65 Bundle
    form: Pairs | None = None
    parts: tuple[bytes, ...] | None = None  # STOW-RS: PS3.10 files


@dataclass(frozen=True)
class Study:
    """What the templates need of one seeded study: its patient and where its first series is."""

    uid: str
    patient: str
    rluid: str  # the Retrieve Location UID of its first series
    series: str
    sop: str


@dataclass(frozen=True)
class Doc:
    registry: str
    id: str
    patient: str
    content_types: tuple[str, ...]


@dataclass
class Corpus:
    fed: Federation
    pki: FederationPki
    listeners: dict[str, Listener]
    templates: dict[str, list[Template]] = field(default_factory=dict)
    patients: dict[str, PatientRecord] = field(default_factory=dict)  # the affiliation's, by id
    study_uids: list[str] = field(default_factory=list)
    pacs_dirs: list[Path] = field(default_factory=list)

    @property
    def log_dir(self) -> Path:
        return self.fed.plan.run_dir / "logs"

    def add(self, template: Template) -> None:
        self.templates.setdefault(template.family, []).append(template)


def build_corpus(fed: Federation, published: dict[str, Published]) -> Corpus:
    if fed.plan.pki_dir is None:
        raise ValueError("the fuzzer needs a secure federation (mTLS and tokens on)")
    pki = FederationPki.load(fed.plan.pki_dir)
    corpus = Corpus(fed, pki, _listeners(fed, pki))
    pub = published[AFFILIATION]
    corpus.patients = {p.id: p for p in pub.data.patients}
    studies = [_study(s) for s in pub.data.studies]
    corpus.study_uids = [s.uid for s in studies]
    docs = _documents(fed, pub.data.patients)
    _fhir(corpus, pub.data.patients, docs)
    _idp(corpus, pub.data.patients)
    _rad160(corpus, studies, fed.topology.country(AFFILIATION).home_community_id)
    _registry(corpus, pub, docs)
    _pacs(corpus, studies)
    corpus.pacs_dirs = sorted(fed.plan.run_dir.glob("*/pacs-*"))
    return corpus


def _listeners(fed: Federation, pki: FederationPki) -> dict[str, Listener]:
    """Every listener of the plan; borders with B's NCP client credentials (mTLS)."""
    out: dict[str, Listener] = {}
    for code, ep in fed.plan.endpoints.countries.items():
        urls = {f"{code} gateway": ep.gateway, f"{code} border": ep.border}
        urls |= {f"{code} registry {reg_id}": url for reg_id, url in ep.registries.items()}
        for name, url in urls.items():
            parts = urlsplit(url)
            tls = pki.client_ssl_context(TREATMENT, peer=code) if parts.scheme == "https" else None
            out[name] = Listener(name, parts.hostname or fed.plan.host, parts.port or 80, tls)
    for role in fed.plan.roles:
        if role.kind == "pacs":
            name = f"{role.country} pacs {role.name}"
            out[name] = Listener(name, fed.plan.host, role.ports[0])
    return out


def _study(study: StudyRecord) -> Study:
    first = study.series[0]
    rluid, sop = first.retrieve_location_uid, first.instances[0].sop_instance_uid
    return Study(study.study_instance_uid, study.patient.id, rluid, first.series_instance_uid, sop)


def _documents(fed: Federation, patients: tuple[PatientRecord, ...]) -> list[Doc]:
    """The affiliation country's current documents, as its registries list them."""
    docs = []
    with httpx.Client(timeout=30) as client:
        for reg_id, base in fed.plan.endpoints[AFFILIATION].registries.items():
            for p in patients:
                params = {"patient.identifier": _token(p), "status": "current"}
                bundle = client.get(f"{base}/DocumentReference", params=params).raise_for_status().json()
                for entry in bundle.get("entry", []):
                    doc = entry["resource"]
                    types = tuple(c["attachment"]["contentType"] for c in doc.get("content", []))
                    docs.append(Doc(reg_id, doc["id"], p.id, types))
    return docs


def _token(p: PatientRecord) -> str:
    return f"urn:oid:{p.issuer}|{p.id}"


def _fhir(corpus: Corpus, patients: tuple[PatientRecord, ...], docs: list[Doc]) -> None:
    """ITI-78/67/68 at B's gateway and at A's border (the same transaction, one hop further)."""
    gw, border = f"{TREATMENT} gateway", f"{AFFILIATION} border"
    accept = (("Accept", FHIR_JSON),)
    for p in patients:
        ident = (("identifier", _token(p)),)
        corpus.add(Template("gateway ITI-78", gw, ("fhir", "Patient"), ident, accept, "hcp"))
        corpus.add(Template("border ITI-78", border, ("fhir", "Patient"), ident, accept, "assert-hcp"))
        search = (("patient.identifier", _token(p)), ("status", "current"))
        for extra in ((), (("modality", "CT"),), (("type", TYPE_MANIFEST.token()), ("_count", "2"))):
            path = ("fhir", "DocumentReference")
            corpus.add(Template("gateway ITI-67", gw, path, search + extra, accept, f"treatment:{p.id}"))
            corpus.add(Template("border ITI-67", border, path, search + extra, accept, f"assert:{p.id}"))
    for d in docs:
        for ct in d.content_types:
            gw_path = ("fhir", "Binary", f"{AFFILIATION}.{d.registry}.{d.id}")
            border_path = ("fhir", "Binary", f"{d.registry}.{d.id}")
            corpus.add(
                Template("gateway ITI-68", gw, gw_path, (), (("Accept", ct),), f"treatment:{d.patient}")
            )
            corpus.add(
                Template("border ITI-68", border, border_path, (), (("Accept", ct),), f"assert:{d.patient}")
            )


def _idp(corpus: Corpus, patients: tuple[PatientRecord, ...]) -> None:
    gw, form_type = f"{TREATMENT} gateway", (("Content-Type", FORM),)
    hcp = (
        ("subject", "dr-fuzz"),
        ("role", "2211"),
        ("organisation", "Hospital AT"),
        ("facility", "Hospital"),
    )
    corpus.add(Template("gateway IdP", gw, ("idp", "token"), (), form_type, method="POST", form=hcp))
    for p in patients:
        form = (("patient_id", p.id), ("patient_issuer", p.issuer), ("purpose_of_use", "TREATMENT"))
        path = ("idp", "treatment")
        corpus.add(Template("gateway IdP", gw, path, (), form_type, "hcp", method="POST", form=form))


def _levels(study: Study) -> list[tuple[str, ...]]:
    """The study's DICOMweb resource at study, series and instance level."""
    base = ("studies", study.uid)
    return [base, (*base, "series", study.series), (*base, "series", study.series, "instances", study.sop)]


_OCTETS = 'multipart/related; type="application/octet-stream"'
# PS3.18 10.4.1.1.3 frames and the PACS's bulk data URI of Pixel Data (ncp.pacs.metadata)
_VIEWER_TAILS = [(("frames", "1"), _OCTETS), (("bulkdata", "7FE00010"), _OCTETS)]


def _rad160(corpus: Corpus, studies: list[Study], hcid: str) -> None:
    """RAD-160 at B's gateway (``/wado``) and at A's border (``/wado-rs``): retrieve, metadata, rendered, and
    at instance level what a viewer asks for (frames, bulk data)."""
    tails = [((), DICOM_PARTS), (("metadata",), "application/dicom+json"), (("rendered",), "image/jpeg")]
    for study in studies:
        for resource in _levels(study):
            where = ("homeCommunityId", hcid, "RetrieveLocationUID", study.rluid, *resource)
            chosen = tails[:2] if len(resource) == 2 else tails  # no rendered whole study
            for tail, accept in chosen + (_VIEWER_TAILS if len(resource) == 6 else []):
                headers = (("Accept", accept),)
                gw, border = ("wado", *where, *tail), ("wado-rs", *where, *tail)
                corpus.add(
                    Template(
                        "gateway RAD-160",
                        f"{TREATMENT} gateway",
                        gw,
                        (),
                        headers,
                        f"treatment:{study.patient}",
                    )
                )
                corpus.add(
                    Template(
                        "border RAD-160",
                        f"{AFFILIATION} border",
                        border,
                        (),
                        headers,
                        f"assert:{study.patient}",
                    )
                )


def _registry(corpus: Corpus, pub: Published, docs: list[Doc]) -> None:
    """A's registry directly: ITI-65, ITI-67 (GET, POST _search, read), ITI-68, Patient search and read."""
    reg = next(name for name in corpus.listeners if name.startswith(f"{AFFILIATION} registry"))
    for p in pub.data.patients:
        search = (("patient.identifier", _token(p)), ("status", "current"))
        corpus.add(Template("registry ITI-67", reg, ("fhir", "DocumentReference"), search))
        path, form_type = ("fhir", "DocumentReference", "_search"), (("Content-Type", FORM),)
        corpus.add(Template("registry ITI-67", reg, path, (), form_type, method="POST", form=search))
        corpus.add(Template("registry PDQm", reg, ("fhir", "Patient"), (("identifier", _token(p)),)))
        by_name = (("family", p.family), ("birthdate", p.birth_date[:4]))
        corpus.add(Template("registry PDQm", reg, ("fhir", "Patient"), by_name))
    corpus.add(Template("registry PDQm", reg, ("fhir", "metadata")))
    for d in (d for d in docs if reg.endswith(f" {d.registry}")):
        corpus.add(Template("registry ITI-67", reg, ("fhir", "DocumentReference", d.id)))
        for ct in d.content_types:
            corpus.add(Template("registry ITI-68", reg, ("fhir", "Binary", d.id), (), (("Accept", ct),)))
    country = corpus.fed.topology.country(AFFILIATION)
    for study in pub.data.studies[:3]:
        document = manifest_document(country, study, pub.manifests[study.study_instance_uid])
        bundle = provide_document_bundle(study.patient, [document], source_oid=country.home_community_id)
        headers = (("Content-Type", FHIR_JSON),)
        corpus.add(
            Template("registry ITI-65", reg, ("fhir",), (), headers, method="POST", json=_numbered(bundle))
        )


_URN = re.compile(r"urn:uuid:[0-9a-f-]{36}")


def _numbered(bundle: dict[str, Any]) -> Any:
    """The Bundle with its random ``urn:uuid`` fullUrls numbered instead: same seed, same bytes."""
    text = json.dumps(bundle)
    numbering: dict[str, str] = {}
    for urn in _URN.findall(text):
        numbering.setdefault(urn, f"urn:uuid:00000000-0000-4000-8000-{len(numbering):012d}")
    return json.loads(_URN.sub(lambda m: numbering[m[0]], text))


def _pacs(corpus: Corpus, studies: list[Study]) -> None:
    """WADO-RS (with metadata and rendered), QIDO-RS and STOW-RS at each PACS, on what it holds."""
    by_port = {listener.port: name for name, listener in corpus.listeners.items() if " pacs " in name}
    holder = {
        rluid: by_port[port]
        for ep in corpus.fed.plan.endpoints.countries.values()
        for rluid, url in ep.pacs.items()
        if (port := urlsplit(url).port) in by_port
    }
    for study in (s for s in studies if s.rluid in holder):
        pacs = holder[study.rluid]
        for resource in _levels(study):
            corpus.add(
                Template("pacs WADO-RS", pacs, ("dicom-web", *resource), (), (("Accept", DICOM_PARTS),))
            )
            corpus.add(Template("pacs WADO-RS", pacs, ("dicom-web", *resource, "metadata")))
            if len(resource) == 6:  # an instance: its frames and bulk data
                for tail, accept in _VIEWER_TAILS:
                    path = ("dicom-web", *resource, *tail)
                    corpus.add(Template("pacs WADO-RS", pacs, path, (), (("Accept", accept),)))
            if len(resource) > 2:  # a series or an instance, as a JPEG
                query = (("window", "40,400"), ("quality", "80"), ("viewport", "64,64"))
                rendered = ("dicom-web", *resource, "rendered")
                corpus.add(Template("pacs WADO-RS", pacs, rendered, query, (("Accept", "image/jpeg"),)))
        _qido_templates(corpus, pacs, study)
    for pacs in sorted(set(holder.values())):
        _stow_templates(corpus, pacs)


def _qido_templates(corpus: Corpus, pacs: str, study: Study) -> None:
    searches: list[tuple[tuple[str, ...], Pairs]] = [
        (("studies",), (("StudyInstanceUID", study.uid),)),
        (("studies", study.uid, "series"), (("Modality", "CT"),)),
        (("series",), (("PatientID", study.patient), ("limit", "5"))),
        (("studies", study.uid, "series", study.series, "instances"), (("includefield", "all"),)),
    ]
    for path, query in searches:
        corpus.add(Template("pacs QIDO-RS", pacs, ("dicom-web", *path), query))


def _stow_templates(corpus: Corpus, pacs: str) -> None:
    """STOW-RS of instances the PACS already holds (their stored bytes): what the garbling starts from."""
    code, _, role = pacs.split(" ")
    root = corpus.fed.plan.run_dir / code / f"pacs-{role}"
    files = [f for f in sorted(root.glob("*/*/*.dcm")) if _ends_with_pixel_data(f)][:6]
    headers = (("Content-Type", f"{DICOM_PARTS}; boundary={BOUNDARY}"), ("Accept", "application/dicom+json"))
    for k in range(0, len(files), 2):
        parts = tuple(f.read_bytes() for f in files[k : k + 2])
        for path in (("dicom-web", "studies"), ("dicom-web", "studies", files[k].parent.parent.name)):
            corpus.add(Template("pacs STOW-RS", pacs, path, (), headers, method="POST", parts=parts))


def _ends_with_pixel_data(path: Path) -> bool:
    """Cutting bytes off such a file always leaves an element shorter than its length says."""
    tags = list(pydicom.dcmread(path).keys())
    return bool(tags) and tags[-1] == pydicom.tag.Tag("PixelData")
