"""The federation's topology: one TOML file declares N countries, their roles and links.

A topology is static description. Where each role listens is decided when the federation
starts and recorded in :class:`Endpoints` (the state file of ``xcwado up``); a role process
receives both and never reads module-level state.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import socket
import tomllib
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from ncp.dicom.uids import is_valid_uid
from ncp.errors import InvalidTopology

__all__ = [
    "Country",
    "CountryEndpoints",
    "Endpoints",
    "Faults",
    "Link",
    "Pacs",
    "Registry",
    "SynthOptions",
    "Topology",
    "XdsEndpoints",
    "builtin_names",
    "builtin_topology",
    "load_topology",
    "nothing_listens",
    "unreachable",
]

Architecture = Literal["A", "B", "C"]
ManifestEncoding = Literal["MADO", "MCWG"]
_OID_CHARS = set("0123456789.")


RegistryKind = Literal["mhd", "xds", "xca"]
_KINDS = ("mhd", "xds", "xca")


@dataclass(frozen=True)
class Registry:
    """A national (architecture A, C) or regional (architecture B) document registry: ``mhd`` (FHIR,
    ITI-65/67/68), ``xds`` (XDS.b registry + repository behind an MHD Document Responder facade) or
    ``xca`` (architecture B: a region that is its own community, an XDS.b registry + repository behind
    an XCA Responding Gateway; docs/xca.md)."""

    id: str
    kind: RegistryKind = "mhd"
    home_community_id: str | None = None  # xca: the region's community (default <country hcid>.<n>)
    # xds, a team's own XDS.b registry + repository that the federation does not start (docs/xds.md, "Your
    # own XDS.b registry behind our NCP-A"): its ITI-18 and ITI-41/43 endpoints, its repository OID
    # (default <hcid>.10.<n>, our rule), and whether seeding publishes the synthetic catalogue into it
    registry_url: str | None = None
    repository_url: str | None = None
    repository_unique_id: str | None = None
    seed: bool = False

    @property
    def external(self) -> bool:
        return self.registry_url is not None


@dataclass(frozen=True)
class Pacs:
    """An Imaging Document Source; ``backend``: ``embedded``, ``orthanc`` (managed) or a DICOMweb base URL."""

    id: str
    retrieve_location_uid: str
    backend: str = "embedded"
    registry: str | None = None  # architecture B: the regional registry that indexes this PACS


@dataclass(frozen=True)
class Faults:
    """Deliberate non-conformances of one country's responding side, so that a run of the scenario
    catalogue can show it catches them (``[countries.XX.faults]``; never set in a real deployment)."""

    ignore_retrieve_location_uid: bool = False  # the RIG sends every RAD-160 to its first PACS
    partial_as_ok: bool = False  # the PACS answers 200 without a Warning where 206 is due

    @property
    def any(self) -> bool:
        return self.ignore_retrieve_location_uid or self.partial_as_ok


@dataclass(frozen=True)
class Country:
    code: str
    name: str
    home_community_id: str
    patient_id_issuer: str
    accession_issuer: str
    order_issuer: str
    architecture: Architecture
    registries: tuple[Registry, ...]
    pacs: tuple[Pacs, ...]
    faults: Faults = Faults()
    # An NCP under test that runs elsewhere: the federation starts nothing for it and calls its border
    # (and, when given, consumers use its gateway); its PACS are declared by their DICOMweb base URLs.
    border: str | None = None
    gateway: str | None = None
    # Where consumers reach this country's gateway (e.g. through a reverse proxy): every URL the gateway
    # writes into an answer starts here, never with a Host header. None: the gateway's own address.
    public_url: str | None = None
    # Addresses of reverse proxies whose X-Forwarded-For / -Proto the gateway listener believes; from
    # anyone else those headers are ignored, so the audited client is the TCP peer.
    trusted_proxies: tuple[str, ...] = ()
    # RAD-160 beyond MADO Appendix XA: frames, frame-level rendered and bulk data, for viewers
    # (docs/decisions.md, "XC-WADO for viewers"); off, both gateway sides refuse them with 404.
    viewer_resources: bool = True
    # Browser origins (``https://viewer.example``) whose scripts may call the gateway listener (CORS).
    cors_origins: tuple[str, ...] = ()

    @property
    def external(self) -> bool:
        return self.border is not None

    def pacs_by_rluid(self, rluid: str) -> Pacs | None:
        return next((p for p in self.pacs if p.retrieve_location_uid == rluid), None)

    def community_of(self, reg_id: str) -> str:
        """An ``xca`` region's homeCommunityId (bare OID): its own, else ``<country hcid>.<n>``
        for the n-th registry of the country."""
        index = [r.id for r in self.registries].index(reg_id)
        return self.registries[index].home_community_id or f"{self.home_community_id}.{index + 1}"

    @property
    def on_xca(self) -> bool:
        """Architecture B with every region its own XCA community (``kind = "xca"``)."""
        return all(r.kind == "xca" for r in self.registries)

    def home_of(self, reg_id: str) -> str:
        """The community a registry's documents (and the PACS it indexes) belong to: an xca region's own,
        else the country's."""
        registry = next(r for r in self.registries if r.id == reg_id)
        return self.community_of(reg_id) if registry.kind == "xca" else self.home_community_id

    def repository_of(self, reg_id: str) -> str:
        """An xds or xca registry's repository uniqueId: the topology's, else ``<community>.10.<n>`` for the
        n-th registry of the country (its community: :meth:`home_of`)."""
        index = [r.id for r in self.registries].index(reg_id)
        return self.registries[index].repository_unique_id or f"{self.home_of(reg_id)}.10.{index + 1}"

    def registry_of(self, rluid: str) -> str:
        """The registry that indexes a PACS's studies: its region (architecture B), else the central one."""
        pacs = self.pacs_by_rluid(rluid)
        return (pacs.registry if pacs and pacs.registry else None) or self.registries[0].id


@dataclass(frozen=True)
class Link:
    """A cross-border link; zero means unshaped."""

    a: str
    b: str
    rtt_ms: float = 0.0
    bandwidth_mbit: float = 0.0
    jitter_ms: float = 0.0


@dataclass(frozen=True)
class SynthOptions:
    seed: int = 20261128
    patients_per_country: int = 3
    studies_per_patient: int = 2
    instance_kb: int = 16
    manifest_encoding: ManifestEncoding = "MADO"


@dataclass(frozen=True)
class Topology:
    name: str
    countries: Mapping[str, Country]
    links: tuple[Link, ...] = ()
    synth: SynthOptions = field(default_factory=SynthOptions)
    security: bool = False
    pki_dir: Path | None = (
        None  # a test PKI to use instead of a new one per run (external NCPs hold its keys)
    )

    def country(self, code: str) -> Country:
        try:
            return self.countries[code]
        except KeyError:
            raise InvalidTopology(
                f"unknown country {code!r}; topology has {sorted(self.countries)}"
            ) from None

    def by_home_community(self, oid: str) -> Country | None:
        return next((c for c in self.countries.values() if c.home_community_id == oid), None)

    def by_patient_issuer(self, oid: str) -> Country | None:
        return next((c for c in self.countries.values() if c.patient_id_issuer == oid), None)

    def link(self, a: str, b: str) -> Link | None:
        return next((lk for lk in self.links if {lk.a, lk.b} == {a, b}), None)


def load_topology(path: str | Path) -> Topology:
    """Read and check a topology file; an invalid one raises InvalidTopology naming the field."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidTopology(f"topology file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidTopology(f"{path}: not valid TOML: {exc}") from None
    return parse_topology(raw, source=str(path))


def builtin_names() -> list[str]:
    """The topologies shipped in ``ncp/topologies`` (``default``, ``three-country``, ``wan``)."""
    folder = resources.files("ncp.topologies")
    return sorted(f.name.removesuffix(".toml") for f in folder.iterdir() if f.name.endswith(".toml"))


def builtin_topology(name: str = "default") -> Topology:
    """One of the topologies shipped in ``ncp/topologies``; an unknown name lists the shipped ones."""
    if name not in builtin_names():
        raise InvalidTopology(
            f"no built-in topology {name!r}; built-in: {', '.join(builtin_names())} (or a .toml file)"
        )
    text = resources.files("ncp.topologies").joinpath(f"{name}.toml").read_text()
    return parse_topology(tomllib.loads(text), source=f"builtin:{name}")


# The keys each table may hold. Anything else is refused: a misspelt key (``rtt_msec``, ``broder``) would
# otherwise be ignored and the run would silently test something else (an unshaped link, a local NCP).
_TOP_KEYS = ("name", "security", "pki_dir", "synth", "countries", "links")
_COUNTRY_KEYS = (
    "name", "home_community_id", "patient_id_issuer", "accession_issuer", "order_issuer", "architecture",
    "registries", "pacs", "faults", "border", "gateway", "public_url", "trusted_proxies",
    "viewer_resources", "cors_origins",
)  # fmt: skip
_EXTERNAL_XDS_KEYS = ("url", "registry_url", "repository_url", "repository_unique_id", "seed")
_REGISTRY_KEYS = ("id", "kind", "home_community_id", *_EXTERNAL_XDS_KEYS)
_PACS_KEYS = ("id", "retrieve_location_uid", "backend", "registry")
_LINK_KEYS = ("between", "rtt_ms", "bandwidth_mbit", "jitter_ms")


def parse_topology(raw: Mapping[str, Any], *, source: str = "topology") -> Topology:
    r = _Reader(raw, source).only(_TOP_KEYS)
    countries_raw = r.mapping("countries")
    if not countries_raw:
        raise InvalidTopology(f"{source}: 'countries' must declare at least one country")
    countries = {
        code: _country(r.sub(f"countries.{code}", body).only(_COUNTRY_KEYS), code)
        for code, body in countries_raw.items()
    }
    communities = [c.community_of(r.id) for c in countries.values() if c.on_xca for r in c.registries]
    _check_unique(
        source, "home_community_id", [c.home_community_id for c in countries.values()] + communities
    )
    _check_unique(source, "patient_id_issuer", [c.patient_id_issuer for c in countries.values()])
    pki_dir = _pki_dir(r)
    _check_external_registries(source, countries, pki_dir)
    _check_unique(
        source, "retrieve_location_uid", [p.retrieve_location_uid for c in countries.values() for p in c.pacs]
    )
    links = tuple(
        _link(r.sub(f"links[{i}]", body).only(_LINK_KEYS), countries)
        for i, body in enumerate(r.items("links"))
    )
    synth = _synth(r.sub("synth", r.mapping("synth")).only(SynthOptions.__dataclass_fields__))
    return Topology(
        name=r.text("name", "topology"),
        countries=countries,
        links=links,
        synth=synth,
        security=r.flag("security", False),
        pki_dir=pki_dir,
    )


def _country(r: _Reader, code: str) -> Country:
    if not (len(code) == 2 and code.isalpha() and code.isupper()):
        raise InvalidTopology(f"{r.source}: country code {code!r} must be an ISO 3166 alpha-2 code")
    hcid = r.oid("home_community_id")
    architecture = r.text("architecture", "A")
    if architecture not in ("A", "B", "C"):
        raise InvalidTopology(f"{r.where('architecture')} must be A, B or C, not {architecture!r}")
    registries = tuple(
        _registry(r.sub(f"registries[{i}]", x).only(_REGISTRY_KEYS))
        for i, x in enumerate(r.items("registries"))
    )
    if not registries:
        raise InvalidTopology(f"{r.where('registries')} must declare at least one registry")
    pacs = tuple(_pacs(r.sub(f"pacs[{i}]", x).only(_PACS_KEYS)) for i, x in enumerate(r.items("pacs")))
    if not pacs:
        raise InvalidTopology(f"{r.where('pacs')} must declare at least one PACS")
    if architecture == "C" and len(pacs) != 1:
        raise InvalidTopology(f"{r.where('pacs')}: architecture C has one central VNA, found {len(pacs)}")
    if architecture != "B" and len(registries) != 1:
        raise InvalidTopology(
            f"{r.where('registries')}: architecture {architecture} has one central registry"
        )
    _check_xca(r, architecture, registries)
    registry_ids = {x.id for x in registries}
    for i, p in enumerate(pacs):
        if p.registry is not None and p.registry not in registry_ids:
            raise InvalidTopology(f"{r.where(f'pacs[{i}].registry')}: no registry {p.registry!r}")
    country = Country(
        code=code,
        name=r.text("name", code),
        home_community_id=hcid,
        patient_id_issuer=r.oid("patient_id_issuer"),
        accession_issuer=r.oid("accession_issuer", f"{hcid}.3"),
        order_issuer=r.oid("order_issuer", f"{hcid}.4"),
        architecture=architecture,  # type: ignore[arg-type]
        registries=registries,
        pacs=pacs,
        faults=_faults(r.sub("faults", r.mapping("faults")).only(Faults.__dataclass_fields__)),
        border=_external_url(r, "border"),
        gateway=_external_url(r, "gateway"),
        public_url=_external_url(r, "public_url"),
        trusted_proxies=_addresses(r, "trusted_proxies"),
        viewer_resources=r.flag("viewer_resources", True),
        cors_origins=_origins(r, "cors_origins"),
    )
    _check_external(r, country)
    return country


def _registry(r: _Reader) -> Registry:
    kind = r.text("kind", "mhd")
    if kind not in _KINDS:
        raise InvalidTopology(f"{r.where('kind')} must be mhd, xds or xca, not {kind!r}")
    hcid = r.oid("home_community_id") if "home_community_id" in r.raw else None
    if hcid is not None and kind != "xca":
        raise InvalidTopology(f"{r.where('home_community_id')}: only an xca region is a community of its own")
    registry = Registry(id=r.text("id"), kind=kind, home_community_id=hcid)  # type: ignore[arg-type]
    return _external_xds(r, registry) if set(_EXTERNAL_XDS_KEYS) & set(r.raw) else registry


def _external_xds(r: _Reader, registry: Registry) -> Registry:
    """A team's own XDS.b registry + repository: ``url``, the base from which ``{url}/xds/registry`` and
    ``{url}/xds/repository`` derive as for our XDS role, and/or ``registry_url`` and ``repository_url``."""
    present = [k for k in _EXTERNAL_XDS_KEYS if k in r.raw]
    if registry.kind != "xds":
        raise InvalidTopology(f"{r.where(present[0])}: only a registry of kind xds is declared by URL")
    base = _external_url(r, "url")
    registry_url, repository_url = _external_url(r, "registry_url"), _external_url(r, "repository_url")
    if base is None and (registry_url is None or repository_url is None):
        raise InvalidTopology(f"{r.where('url')} is required unless both registry_url and repository_url are")
    return replace(
        registry,
        registry_url=registry_url or f"{base}/xds/registry",  # ncp.registry.xds.settings.soap_endpoints
        repository_url=repository_url or f"{base}/xds/repository",
        repository_unique_id=r.oid("repository_unique_id") if "repository_unique_id" in r.raw else None,
        seed=r.flag("seed", False),
    )


def _check_external_registries(source: str, countries: Mapping[str, Country], pki_dir: Path | None) -> None:
    """Our facade reaches an https registry as NCPs reach an external border: the shared test PKI's CA and
    the country's client certificate; a registry of an external NCP is that NCP's business."""
    for code, country in countries.items():
        for i, reg in enumerate(country.registries):
            where = f"{source}: field 'countries.{code}.registries[{i}]'"
            if reg.external and country.external:
                raise InvalidTopology(f"{where}: an external NCP's registry is not declared by URL here")
            urls = (reg.registry_url or "", reg.repository_url or "")
            if pki_dir is None and any(u.startswith("https://") for u in urls):
                raise InvalidTopology(
                    f"{where}: an https registry needs the topology's 'pki_dir' (xcwado pki)"
                )


def _check_xca(r: _Reader, architecture: str, registries: tuple[Registry, ...]) -> None:
    """XCA regions are architecture B, all of a country's registries (NCP-A asks one Initiating
    Gateway), each with a community id of its own."""
    kinds = {x.kind for x in registries}
    if "xca" not in kinds:
        return
    if architecture != "B" or kinds != {"xca"}:
        raise InvalidTopology(
            f"{r.where('registries')}: xca regions need architecture B and every registry of kind xca"
        )


def _external_url(r: _Reader, key: str) -> str | None:
    url = r.opt_str(key)
    if url is not None and not url.startswith(("http://", "https://")):
        raise InvalidTopology(f"{r.where(key)} must be an http(s) URL, not {url!r}")
    return url.rstrip("/") if url else None


def _addresses(r: _Reader, key: str) -> tuple[str, ...]:
    values = r.items(key) if key in r.raw else []
    try:
        return tuple(str(ipaddress.ip_address(v)) for v in values)
    except ValueError:
        raise InvalidTopology(f"{r.where(key)} must list IP addresses, got {values!r}") from None


def _origins(r: _Reader, key: str) -> tuple[str, ...]:
    """Browser origins (RFC 6454), as a browser serialises them: lower case, no default port, no path."""
    out = []
    for value in r.items(key):
        parts = urlsplit(value) if isinstance(value, str) else None
        try:
            port = parts.port if parts else None
        except ValueError:
            parts = None
        if (
            parts is None
            or parts.scheme not in ("http", "https")
            or not parts.hostname
            or parts.username is not None
            or f"{parts.scheme}://{parts.netloc}" != value
        ):
            raise InvalidTopology(
                f"{r.where(key)}: {value!r} is not an origin such as 'https://viewer.example'"
            )
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        default = {"http": 80, "https": 443}[parts.scheme]
        out.append(f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default) else ""))
    return tuple(out)


def _check_external(r: _Reader, country: Country) -> None:
    if country.gateway and not country.border:
        raise InvalidTopology(f"{r.where('gateway')} is only for an external NCP, which needs a 'border'")
    for i, p in enumerate(country.pacs):
        if country.external and not p.backend.startswith(("http://", "https://")):
            raise InvalidTopology(
                f"{r.where(f'pacs[{i}].backend')}: an external NCP declares its PACS by DICOMweb base URL"
            )


def _pki_dir(r: _Reader) -> Path | None:
    value = r.opt_str("pki_dir")
    if value is None:
        return None
    path = Path(os.path.abspath(value))  # the state file names it for processes started anywhere
    if not (path / "registry.json").is_file():
        raise InvalidTopology(
            f"{r.where('pki_dir')}: {path} is not a test PKI (no registry.json); see xcwado pki"
        )
    return path


def _faults(r: _Reader) -> Faults:
    return Faults(**{name: r.flag(name, False) for name in Faults.__dataclass_fields__})


def _pacs(r: _Reader) -> Pacs:
    rluid = r.text("retrieve_location_uid")
    if not is_valid_uid(rluid) or rluid.startswith("2.999"):
        raise InvalidTopology(
            f"{r.where('retrieve_location_uid')} {rluid!r} must be a valid DICOM UID with a real root "
            "(e.g. 2.25.<uuid>); it goes into manifests"
        )
    backend = r.text("backend", "embedded")
    if backend not in ("embedded", "orthanc") and not backend.startswith(("http://", "https://")):
        raise InvalidTopology(f"{r.where('backend')} must be 'embedded', 'orthanc' or a DICOMweb base URL")
    return Pacs(id=r.text("id"), retrieve_location_uid=rluid, backend=backend, registry=r.opt_str("registry"))


def _link(r: _Reader, countries: Mapping[str, Country]) -> Link:
    between = r.raw.get("between")
    if not (isinstance(between, list) and len(between) == 2 and all(c in countries for c in between)):
        raise InvalidTopology(f"{r.where('between')} must name two declared countries")
    return Link(
        a=between[0],
        b=between[1],
        rtt_ms=r.number("rtt_ms", 0.0),
        bandwidth_mbit=r.number("bandwidth_mbit", 0.0),
        jitter_ms=r.number("jitter_ms", 0.0),
    )


def _synth(r: _Reader) -> SynthOptions:
    d = SynthOptions()
    encoding = r.text("manifest_encoding", d.manifest_encoding)
    if encoding not in ("MADO", "MCWG"):
        raise InvalidTopology(f"{r.where('manifest_encoding')} must be MADO or MCWG")
    return SynthOptions(
        seed=r.integer("seed", d.seed),
        patients_per_country=r.integer("patients_per_country", d.patients_per_country),
        studies_per_patient=r.integer("studies_per_patient", d.studies_per_patient),
        instance_kb=r.integer("instance_kb", d.instance_kb),
        manifest_encoding=encoding,  # type: ignore[arg-type]
    )


def _check_unique(source: str, name: str, values: list[str]) -> None:
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise InvalidTopology(f"{source}: {name} must be unique across the topology; repeated: {dupes}")


class _Reader:
    """Typed access to one TOML table, with errors that name the field's full path."""

    def __init__(self, raw: Mapping[str, Any], source: str, prefix: str = "") -> None:
        self.raw, self.source, self.prefix = raw, source, prefix

    def where(self, key: str) -> str:
        return f"{self.source}: field '{self.prefix}{key}'"

    def only(self, allowed: Iterable[str]) -> _Reader:
        """Refuse keys outside ``allowed``, naming the key's full path, a close match and the allowed keys."""
        allowed = sorted(allowed)
        unknown = sorted(set(self.raw) - set(allowed))
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise InvalidTopology(
                f"{self.source}: unknown key '{self.prefix}{key}'{hint}; allowed here: {', '.join(allowed)}"
            )
        return self

    def sub(self, key: str, raw: Any) -> _Reader:
        if not isinstance(raw, Mapping):
            raise InvalidTopology(f"{self.where(key)} must be a table")
        return _Reader(raw, self.source, f"{self.prefix}{key}.")

    def _get(self, key: str, kind: type | tuple[type, ...], default: Any) -> Any:
        if key not in self.raw:
            if default is _REQUIRED:
                raise InvalidTopology(f"{self.where(key)} is required")
            return default
        value = self.raw[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidTopology(f"{self.where(key)} has the wrong type ({type(value).__name__})")
        return value

    def text(self, key: str, default: Any = None) -> str:
        return str(self._get(key, str, _REQUIRED if default is None else default))

    def opt_str(self, key: str) -> str | None:
        value = self._get(key, str, None)
        return None if value is None else str(value)

    def oid(self, key: str, default: str | None = None) -> str:
        value = self.text(key, default)
        if (
            not value
            or set(value) - _OID_CHARS
            or ".." in value
            or value.startswith(".")
            or value.endswith(".")
        ):
            raise InvalidTopology(
                f"{self.where(key)} {value!r} is not a bare OID (digits and dots, no urn:oid:)"
            )
        return value

    def integer(self, key: str, default: int) -> int:
        value = int(self._get(key, int, default))
        if value < 0:
            raise InvalidTopology(f"{self.where(key)} must not be negative")
        return value

    def number(self, key: str, default: float) -> float:
        value = float(self._get(key, (int, float), default))
        if value < 0:
            raise InvalidTopology(f"{self.where(key)} must not be negative")
        return value

    def flag(self, key: str, default: bool) -> bool:
        return bool(self._get(key, bool, default))

    def mapping(self, key: str) -> Mapping[str, Any]:
        value = self._get(key, dict, {})
        return value  # type: ignore[no-any-return]

    def items(self, key: str) -> list[Any]:
        return list(self._get(key, list, []))


_REQUIRED: Any = object()


def unreachable(urls: Mapping[str, str], timeout: float = 1.0) -> dict[str, str]:
    """Those of ``urls`` (label -> URL) where nothing accepts a TCP connection within ``timeout``.

    A connect rather than a request: a border takes only NCP client certificates and an NCP under test
    need not serve ``/health``; what this catches is a stopped federation, before minutes of refusals."""

    def down(url: str) -> bool:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout).close()
        except OSError:
            return True
        return False

    with ThreadPoolExecutor(max_workers=max(1, min(16, len(urls)))) as pool:
        verdicts = dict(zip(urls, pool.map(down, urls.values()), strict=True))
    return {label: url for label, url in urls.items() if verdicts[label]}


def nothing_listens(down: Mapping[str, str]) -> str:
    """What :func:`unreachable` found, in one line for a person to act on."""
    label, url = next(iter(down.items()))
    more = f" nor at {len(down) - 1} more of its endpoints" if len(down) > 1 else ""
    return f"nothing listens at {url} ({label}){more}; is the federation running (xcwado up)?"


@dataclass(frozen=True)
class XdsEndpoints:
    """One registry's XDS.b endpoints (the state file's ``countries.<code>.xds.<registry id>``, contract)."""

    registry: str  # ITI-18 Registry Stored Query
    repository: str  # ITI-41 Provide and Register, ITI-43 Retrieve Document Set
    repository_unique_id: str  # bare OID, the DocumentEntries' repositoryUniqueId

    def to_json(self) -> dict[str, str]:
        return {
            "registry": self.registry,
            "repository": self.repository,
            "repository_unique_id": self.repository_unique_id,
        }


@dataclass(frozen=True)
class CountryEndpoints:
    """Where one country's roles listen (the state file's ``countries.<code>`` object, contract)."""

    home_community_id: str
    patient_id_issuer: str
    gateway: str
    border: str
    registries: Mapping[str, str]  # registry id -> FHIR base
    pacs: Mapping[str, str]  # Retrieve Location UID -> DICOMweb base
    public: str = ""  # the gateway's public base (topology public_url); "" = the gateway's own address
    # xca regions: homeCommunityId -> base of the region's listener (XCA Responding Gateway and XDS.b)
    communities: Mapping[str, str] = field(default_factory=dict)
    # xds and xca registries, ours and a team's own: registry id -> its XDS.b endpoints
    xds: Mapping[str, XdsEndpoints] = field(default_factory=dict)

    @property
    def public_base(self) -> str:
        return self.public or self.gateway

    def to_json(self) -> dict[str, Any]:
        return {
            "home_community_id": self.home_community_id,
            "patient_id_issuer": self.patient_id_issuer,
            "gateway": self.gateway,
            "public": self.public_base,
            "border": self.border,
            "registries": list(self.registries.values()),
            "registry_ids": dict(self.registries),
            "pacs": dict(self.pacs),
            "communities": dict(self.communities),
            "xds": {reg_id: ep.to_json() for reg_id, ep in self.xds.items()},
        }


@dataclass(frozen=True)
class Endpoints:
    countries: Mapping[str, CountryEndpoints]

    def __getitem__(self, code: str) -> CountryEndpoints:
        return self.countries[code]

    def to_json(self) -> dict[str, Any]:
        return {code: ep.to_json() for code, ep in self.countries.items()}

    def entry_points(self) -> dict[str, str]:
        """What a client calls first, by label (``AT gateway``, ``FR border``): every gateway and border."""
        out: dict[str, str] = {}
        for code, ep in self.countries.items():
            out |= {
                f"{code} {what}": url for what, url in (("gateway", ep.gateway), ("border", ep.border)) if url
            }
        return out

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Endpoints:
        return cls(
            {
                code: CountryEndpoints(
                    home_community_id=c["home_community_id"],
                    patient_id_issuer=c["patient_id_issuer"],
                    gateway=c["gateway"],
                    # to_json writes the gateway's own address when no public base is configured: read
                    # back as "none configured", so that a plan survives its own file unchanged
                    public="" if c.get("public") in (None, "", c["gateway"]) else c["public"],
                    border=c["border"],
                    registries=c.get("registry_ids") or {str(i): u for i, u in enumerate(c["registries"])},
                    pacs=c["pacs"],
                    communities=c.get("communities", {}),
                    xds={reg_id: XdsEndpoints(**ep) for reg_id, ep in c.get("xds", {}).items()},
                )
                for code, c in raw.items()
            }
        )
