"""The state file of ``xcwado up``, read into typed and checked values (docs/state-file.md, contract).

One reader for every client of a running federation: ``ncp`` (``xcwado scenario run --target``), the
scenario catalogue and ``loadtests/``. It applies the rules of docs/state-file.schema.json, so that a file
which breaks the contract fails here, in one line naming the JSON path at fault, and not as a ``KeyError``
or a refused connection later. Every UID and OID is checked (PS3.5 9.1) and every base URL must be http(s)
before anything can put it into a request: a client never follows a host it was not given.

``xcwado up`` writes every key; a file written by hand for systems under test may leave out the optional
ones, which take the defaults below.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ncp.dicom.uids import is_valid_uid, validate_oid
from ncp.errors import InvalidRequest
from ncp.topology import CountryEndpoints, Endpoints, XdsEndpoints

__all__ = [
    "STATE_ENV",
    "CountryState",
    "FederationState",
    "LinkState",
    "PatientEntry",
    "SecurityState",
    "SeriesEntry",
    "StateFileError",
    "StudyEntry",
    "TokenRecipe",
    "Visit",
    "load_state",
]

STATE_ENV = "XCWADO_STATE"  # where a client finds the state file when it is given no path
T = TypeVar("T")


class StateFileError(InvalidRequest):
    """The state file is missing, unreadable or does not follow docs/state-file.md."""


# --------------------------------------------------------------------------- the values


@dataclass(frozen=True)
class TokenRecipe:
    """How to obtain a token at a country's identity provider (``security.tokens.<code>``)."""

    method: str
    url: str
    form: Mapping[str, str]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CountryState:
    """Where one country's roles listen (``countries.<code>``)."""

    code: str
    home_community_id: str  # bare OID
    patient_id_issuer: str  # bare OID
    gateway: str  # consumer-facing gateway base; "" for an NCP under test that offers none
    public: str  # the gateway's public base, what its answers name (default: the gateway)
    border: str  # the listener other NCPs call (mutual TLS when security is enabled); "" if not given
    registries: Mapping[str, str]  # registry id -> FHIR base
    pacs: Mapping[str, str]  # Retrieve Location UID -> DICOMweb base, exactly as written in manifests
    hcp_token: TokenRecipe | None = None
    # xca regions: homeCommunityId -> Responding Gateway listener (docs/xca.md)
    communities: Mapping[str, str] = field(default_factory=dict)
    treatment_token: TokenRecipe | None = None
    # registries of kind xds and xca, ours and a team's own: registry id -> its XDS.b endpoints
    xds: Mapping[str, XdsEndpoints] = field(default_factory=dict)

    def endpoints(self) -> CountryEndpoints:
        return CountryEndpoints(
            home_community_id=self.home_community_id,
            patient_id_issuer=self.patient_id_issuer,
            gateway=self.gateway,
            border=self.border,
            registries=dict(self.registries),
            pacs=dict(self.pacs),
            public="" if self.public == self.gateway else self.public,
            communities=dict(self.communities),
            xds=dict(self.xds),
        )

    def pacs_base(self, retrieve_location_uid: str) -> str:
        """The DICOMweb base of one PACS, ending with ``/`` so that a relative path joins under it."""
        try:
            base = self.pacs[retrieve_location_uid]
        except KeyError:
            raise StateFileError(f"no PACS for {retrieve_location_uid} in {self.code}") from None
        return base if base.endswith("/") else base + "/"


@dataclass(frozen=True)
class SeriesEntry:
    series_instance_uid: str
    retrieve_location_uid: str
    instances: int
    sop_instance_uids: tuple[str, ...] = ()  # empty when the file does not list them


@dataclass(frozen=True)
class StudyEntry:
    study_instance_uid: str
    series: tuple[SeriesEntry, ...]
    accession_number: str = ""
    modalities: tuple[str, ...] = ()
    anatomical_region: str | None = None  # SNOMED CT code of the MCWG coarse region (level-1 key)
    manifest_sop_instance_uid: str | None = None
    procedure: str | None = None  # display name of the performed procedure (level-2 key)

    @property
    def instance_count(self) -> int:
        return sum(s.instances for s in self.series)

    def by_location(self) -> dict[str, tuple[SeriesEntry, ...]]:
        """Series grouped by Retrieve Location UID: one study-level request per location (RAD-160)."""
        out: dict[str, list[SeriesEntry]] = {}
        for s in self.series:
            out.setdefault(s.retrieve_location_uid, []).append(s)
        return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class PatientEntry:
    country: str
    id: str
    issuer: str
    studies: tuple[StudyEntry, ...] = ()

    @property
    def fhir_identifier(self) -> str:
        """The token PDQm and ITI-67 search with: ``urn:oid:`` system, as everywhere in FHIR."""
        return f"urn:oid:{self.issuer}|{self.id}"


@dataclass(frozen=True)
class SecurityState:
    enabled: bool = False
    pki_dir: Path | None = None  # the test PKI itself (scenarios forge expired and foreign tokens)
    ca_file: Path | None = None
    client_credentials: Mapping[str, tuple[Path, Path]] = field(default_factory=dict)  # code -> cert, key


@dataclass(frozen=True)
class LinkState:
    """An emulated cross-border link: the relay's address, the border it reaches, what it does to bytes."""

    id: str
    listen: str  # host:port
    target: str  # host:port
    rtt_ms: float
    bandwidth_mbit: float
    jitter_ms: float
    fault: str | None


Visit = tuple[CountryState, PatientEntry, StudyEntry]  # (consumer's country B, patient of A, study)


@dataclass(frozen=True)
class FederationState:
    """A running federation as its state file describes it."""

    topology: str  # "builtin:<name>" or the topology file: the synthetic catalogue the systems hold
    countries: Mapping[str, CountryState]
    run_dir: Path | None = None  # the simulated systems' files; None for systems under test
    patients: tuple[PatientEntry, ...] = ()
    security: SecurityState = field(default_factory=SecurityState)
    links: Mapping[str, LinkState] = field(default_factory=dict)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str]) -> FederationState:
        """Read and check the file at ``path``; StateFileError names what is wrong."""
        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise StateFileError(f"cannot read state file {path}: {exc.strerror or exc}") from None
        except ValueError as exc:
            raise StateFileError(f"state file {path} is not JSON: {exc}") from None
        return cls.from_json(raw, source=str(path))

    @classmethod
    def from_json(cls, raw: object, *, source: str = "state file") -> FederationState:
        top = _Json(raw, source, "")
        top.only("topology", "run_dir", "countries", "catalogue", "security", "links")
        topology = top.text("topology")
        security = top.obj("security") if "security" in top.raw else None
        tokens = _tokens(security, top.obj("countries"))
        countries = {code: _country(c, tokens.get(code, {})) for code, c in top.obj("countries").items()}
        if not countries:
            raise StateFileError(f"{top.where('countries')} names no country")
        return cls(
            topology=topology,
            countries=countries,
            run_dir=top.path("run_dir") if top.raw.get("run_dir") is not None else None,
            patients=_catalogue(top.obj("catalogue")) if "catalogue" in top.raw else (),
            security=_security(security) if security else SecurityState(),
            links={key: _link(key, body) for key, body in top.items_of("links")},
        )

    def endpoints(self) -> Endpoints:
        """The countries as ``ncp.topology.Endpoints``, what the consumer and the synthesiser take."""
        return Endpoints({code: c.endpoints() for code, c in self.countries.items()})

    def pacs_base(self, country: str, retrieve_location_uid: str) -> str:
        if country not in self.countries:
            raise StateFileError(f"country {country!r} is not in the state file")
        return self.countries[country].pacs_base(retrieve_location_uid)

    def treatment_for(self, patient: PatientEntry, override: str | None = None) -> CountryState:
        """The consumer's country (B): ``override``, else the first country that is not the patient's."""
        if override:
            if override not in self.countries:
                raise StateFileError(f"treatment country {override!r} is not in the state file")
            return self.countries[override]
        for code, country in self.countries.items():
            if code != patient.country:
                return country
        raise StateFileError("a cross-border consultation needs at least two countries")

    def visits(self, override: str | None = None) -> tuple[Visit, ...]:
        """Every (B, patient of A, study) a consumer can consult (patients not of ``override``, if given)."""
        out = [
            (self.treatment_for(patient, override), patient, study)
            for patient in self.patients
            if patient.country != override and patient.country in self.countries
            for study in patient.studies
        ]
        if not out:
            raise StateFileError(
                f"the catalogue has no study a consumer in {override or 'another country'} can consult"
            )
        return tuple(out)


def load_state(path: str | os.PathLike[str] | None = None) -> FederationState:
    """The state file at ``path``, else at ``$XCWADO_STATE``."""
    where = path or os.environ.get(STATE_ENV)
    if not where:
        raise StateFileError(f"no state file: pass its path or set {STATE_ENV} (`xcwado up --state FILE`)")
    return FederationState.from_path(where)


# --------------------------------------------------------------------------- parsing, one object each

_COUNTRY_KEYS = (
    "home_community_id",
    "patient_id_issuer",
    "gateway",
    "public",
    "border",
    "registries",
    "registry_ids",
    "pacs",
    "communities",
    "xds",
)


def _country(c: _Json, tokens: Mapping[str, TokenRecipe]) -> CountryState:
    c.only(*_COUNTRY_KEYS)
    _country_code(f"{c.source}: country code", c.key)
    gateway = c.url("gateway", empty_ok=True)
    return CountryState(
        code=c.key,
        home_community_id=c.oid("home_community_id"),
        patient_id_issuer=c.oid("patient_id_issuer"),
        gateway=gateway,
        public=c.url("public", empty_ok=not gateway) if "public" in c.raw else gateway,
        border=c.optional("border", c.url) or "",
        registries=_registries(c),
        pacs=_pacs(c.obj("pacs")),
        hcp_token=tokens.get("hcp_token"),
        treatment_token=tokens.get("treatment_token"),
        communities=_communities(c),
        xds={reg_id: _xds(body) for reg_id, body in c.items_of("xds")},
    )


def _xds(x: _Json) -> XdsEndpoints:
    """One registry's XDS.b endpoints: ITI-18, ITI-41/43, and the repository's uniqueId."""
    x.only("registry", "repository", "repository_unique_id")
    return XdsEndpoints(x.url("registry"), x.url("repository"), x.oid("repository_unique_id"))


def _communities(c: _Json) -> dict[str, str]:
    """homeCommunityId (a key that is an OID) -> the region's Responding Gateway listener."""
    if "communities" not in c.raw:
        return {}
    found = c.obj("communities")
    return {found.oid_key(hcid): found.url(hcid) for hcid in found.raw}


def _registries(c: _Json) -> dict[str, str]:
    """``registry_ids`` (id -> FHIR base) and ``registries`` (the same bases as a list) must agree; a file
    with the list only names them by position."""
    listed = [url.rstrip("/") for url in c.urls("registries")] if "registries" in c.raw else None
    if "registry_ids" not in c.raw:
        return {str(i): url for i, url in enumerate(listed or [])}
    ids = c.obj("registry_ids")
    by_id = {key: ids.url(key) for key in ids.raw}
    if listed is not None and sorted(listed) != sorted(by_id.values()):
        raise StateFileError(f"{c.where('registries')} must list the FHIR bases of 'registry_ids'")
    return by_id


def _pacs(p: _Json) -> dict[str, str]:
    """Retrieve Location UID -> DICOMweb base, kept byte for byte: manifests carry it as Retrieve URL."""
    return {p.uid_key(rluid): p.url(rluid, strip=False) for rluid in p.raw}


def _security(s: _Json) -> SecurityState:
    if not s.flag("enabled"):
        s.only("enabled")
        return SecurityState()
    s.only("enabled", "pki_dir", "ca_file", "ncp_client_credentials", "tokens")
    credentials = {}
    for code, body in s.items_of("ncp_client_credentials"):
        body.only("cert", "key")
        credentials[code] = (body.path("cert"), body.path("key"))
    return SecurityState(True, s.optional("pki_dir", s.path), s.optional("ca_file", s.path), credentials)


def _tokens(security: _Json | None, countries: _Json) -> dict[str, dict[str, TokenRecipe]]:
    """Per country, its identity provider's token recipes (read only when security is enabled)."""
    if security is None or not security.flag("enabled"):
        return {}
    out = {}
    for code, body in security.items_of("tokens"):
        if code not in countries.raw:
            raise StateFileError(f"{security.where('tokens')}: no country {code!r} in 'countries'")
        body.only("hcp_token", "treatment_token", "use")
        out[code] = {name: _recipe(body.obj(name)) for name in ("hcp_token", "treatment_token")}
    return out


def _recipe(r: _Json) -> TokenRecipe:
    r.only("method", "url", "form", "headers")
    method = r.text("method")
    if method not in ("GET", "POST"):
        raise StateFileError(f"{r.where('method')} must be GET or POST, not {method!r}")
    headers = r.obj("headers").strings() if "headers" in r.raw else {}
    return TokenRecipe(method, r.url("url"), r.obj("form").strings(), headers)


def _catalogue(c: _Json) -> tuple[PatientEntry, ...]:
    c.only("patients")
    return tuple(_patient(p) for p in c.array("patients"))


# Catalogue entries may carry more than the contract (extras such as dates, descriptions, requests):
# they are read for what a client needs and the rest is left to whoever wants it.


def _patient(p: _Json) -> PatientEntry:
    return PatientEntry(
        country=_country_code(p.where("country"), p.text("country")),
        id=p.text("id"),
        issuer=p.oid("issuer"),
        studies=tuple(_study(s) for s in p.array("studies", optional=True)),
    )


def _study(s: _Json) -> StudyEntry:
    return StudyEntry(
        study_instance_uid=s.uid("study_instance_uid"),
        series=tuple(_series(x) for x in s.array("series")),
        accession_number=s.optional("accession_number", s.text_or_empty) or "",
        modalities=tuple(s.optional("modalities", s.texts) or ()),
        anatomical_region=s.optional("anatomical_region", s.text),
        manifest_sop_instance_uid=s.optional("manifest_sop_instance_uid", s.uid),
        procedure=s.optional("procedure", s.text_or_empty),
    )


def _series(x: _Json) -> SeriesEntry:
    sops = tuple(x.uids("sop_instance_uids")) if "sop_instance_uids" in x.raw else ()
    return SeriesEntry(
        series_instance_uid=x.uid("series_instance_uid"),
        retrieve_location_uid=x.uid("retrieve_location_uid"),
        instances=x.count("instances") if "instances" in x.raw else len(sops),
        sop_instance_uids=sops,
    )


def _link(key: str, k: _Json) -> LinkState:
    k.only("listen", "target", "rtt_ms", "bandwidth_mbit", "jitter_ms", "fault")
    to, _, caller = key.removeprefix("link/").partition("-")
    if not key.startswith("link/") or not (_is_country_code(to) and _is_country_code(caller)):
        raise StateFileError(f"{k.source}: link {key!r} is not named link/<country>-<country>")
    fault = k.raw.get("fault")
    if fault is not None and not isinstance(fault, str):
        raise StateFileError(f"{k.where('fault')} must be a string or null")
    return LinkState(
        key,
        k.address("listen"),
        k.address("target"),
        k.number("rtt_ms"),
        k.number("bandwidth_mbit"),
        k.number("jitter_ms"),
        fault,
    )


# --------------------------------------------------------------------------- typed access, named errors


class _Json:
    """One JSON object of the state file; every error names its path (``countries.FR.pacs``)."""

    def __init__(self, raw: object, source: str, path: str, key: str = "") -> None:
        self.source, self.key = source, key
        if not isinstance(raw, Mapping):
            raise StateFileError(f"{source}: '{path or '(top level)'}' must be a JSON object")
        self.raw: Mapping[str, Any] = raw
        self._prefix = f"{path}." if path else ""

    def where(self, key: str) -> str:
        return f"{self.source}: '{self._prefix}{key}'"

    def _get(self, key: str) -> Any:
        if key not in self.raw:
            raise StateFileError(f"{self.where(key)} is missing (docs/state-file.md)")
        return self.raw[key]

    def only(self, *keys: str) -> None:
        """Refuse unknown keys: a misspelt one would otherwise be ignored and its value never used."""
        unknown = sorted(set(self.raw) - set(keys))
        if unknown:
            raise StateFileError(f"{self.where(unknown[0])} is not a state-file key (docs/state-file.md)")

    # -- nested objects and arrays
    def obj(self, key: str) -> _Json:
        return _Json(self._get(key), self.source, self._prefix + key, key)

    def items_of(self, key: str) -> Iterator[tuple[str, _Json]]:
        """The members of the object at ``key`` (none when it is absent), each as an object."""
        if key in self.raw:
            for name, value in self.obj(key).raw.items():
                yield name, _Json(value, self.source, f"{self._prefix}{key}.{name}", name)

    def items(self) -> Iterator[tuple[str, _Json]]:
        for key, value in self.raw.items():
            yield key, _Json(value, self.source, self._prefix + key, key)

    def _list(self, key: str) -> list[Any]:
        value = self._get(key)
        if not isinstance(value, list):
            raise StateFileError(f"{self.where(key)} must be a JSON array")
        return value

    def array(self, key: str, *, optional: bool = False) -> Iterator[_Json]:
        values = self._list(key) if key in self.raw or not optional else []
        for i, value in enumerate(values):
            yield _Json(value, self.source, f"{self._prefix}{key}[{i}]")

    def texts(self, key: str) -> list[str]:
        return [_text(self.where(f"{key}[{i}]"), v) for i, v in enumerate(self._list(key))]

    def uids(self, key: str) -> list[str]:
        return [_uid(self.where(f"{key}[{i}]"), v) for i, v in enumerate(self._list(key))]

    def urls(self, key: str) -> list[str]:
        return [_url(self.where(f"{key}[{i}]"), v) for i, v in enumerate(self._list(key))]

    def strings(self) -> dict[str, str]:
        """Every value of this object, each a string (a form or a set of headers)."""
        return {key: _text(self.where(key), value, empty_ok=True) for key, value in self.raw.items()}

    # -- scalars
    def text(self, key: str, *, empty_ok: bool = False) -> str:
        return _text(self.where(key), self._get(key), empty_ok=empty_ok)

    def text_or_empty(self, key: str) -> str:
        return self.text(key, empty_ok=True)

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise StateFileError(f"{self.where(key)} must be true or false")
        return value

    def number(self, key: str) -> float:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise StateFileError(f"{self.where(key)} must be a number >= 0")
        return float(value)

    def count(self, key: str) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise StateFileError(f"{self.where(key)} must be an integer >= 0")
        return value

    def oid(self, key: str) -> str:
        value = self.text(key)
        try:
            return validate_oid(value)
        except InvalidRequest:
            raise StateFileError(f"{self.where(key)} {value!r} is not an OID (digits and dots)") from None

    def uid(self, key: str) -> str:
        return _uid(self.where(key), self._get(key))

    def oid_key(self, key: str) -> str:
        """A key that is itself an OID (``communities`` is keyed by homeCommunityId)."""
        try:
            return validate_oid(key)
        except InvalidRequest:
            raise StateFileError(
                f"{self.source}: a key of '{self._prefix.rstrip('.')}' {key!r} is not an OID"
            ) from None

    def uid_key(self, key: str) -> str:
        """A key that is itself a UID (``pacs`` is keyed by Retrieve Location UID)."""
        return _uid(f"{self.source}: a key of '{self._prefix.rstrip('.')}'", key)

    def url(self, key: str, *, empty_ok: bool = False, strip: bool = True) -> str:
        value = self._get(key)
        if empty_ok and value == "":
            return ""
        url = _url(self.where(key), value)
        return url.rstrip("/") if strip else url

    def optional(self, key: str, read: Callable[[str], T]) -> T | None:
        """``read(key)`` when the key is present, else None (the caller's default)."""
        return read(key) if key in self.raw else None

    def path(self, key: str) -> Path:
        """An absolute path: a client started from another folder must find the same file."""
        path = Path(self.text(key))
        if not path.is_absolute():
            raise StateFileError(f"{self.where(key)} {str(path)!r} is not an absolute path")
        return path

    def address(self, key: str) -> str:
        value = self.text(key)
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit():
            raise StateFileError(f"{self.where(key)} {value!r} is not host:port")
        return value


def _is_country_code(code: str) -> bool:
    return len(code) == 2 and code.isascii() and code.isalpha() and code.isupper()


def _country_code(where: str, code: str) -> str:
    if not _is_country_code(code):
        raise StateFileError(f"{where} {code!r} is not an ISO 3166 alpha-2 code")
    return code


def _text(where: str, value: object, *, empty_ok: bool = False) -> str:
    if not isinstance(value, str) or (not value and not empty_ok):
        raise StateFileError(f"{where} must be a non-empty string")
    return value


def _uid(where: str, value: object) -> str:
    if not isinstance(value, str) or not is_valid_uid(value):
        raise StateFileError(f"{where} {value!r} is not a valid DICOM UID (PS3.5 9.1)")
    return value


def _url(where: str, value: object) -> str:
    parts = urlsplit(_text(where, value))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise StateFileError(f"{where} {value!r} is not an http(s) base URL")
    return str(value)
