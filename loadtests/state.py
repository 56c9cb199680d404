"""The federation a load test drives, read from the state file of ``xcwado up`` (ARCHITECTURE §8).

Pure module (no ``locust`` import): the runner, the summary and pytest may import it. Every UID
taken from the file is checked (PS3.5 §9.1) before it can reach a URL path, and every base URL
comes from the file's ``countries``: a load test never follows a host it was not given.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ncp.dicom.uids import validate_oid, validate_uid
from ncp.errors import NcpError

__all__ = [
    "STATE_ENV",
    "TREATMENT_ENV",
    "Country",
    "FederationState",
    "Patient",
    "Series",
    "StateError",
    "Study",
    "TokenRecipe",
    "load_state",
]

STATE_ENV = "XCWADO_STATE"
TREATMENT_ENV = "XCWADO_TREATMENT"


class StateError(ValueError):
    """The state file is missing, unreadable or not the §8 contract."""


@dataclass(frozen=True)
class Series:
    series_instance_uid: str
    retrieve_location_uid: str
    sop_instance_uids: tuple[str, ...]


@dataclass(frozen=True)
class Study:
    study_instance_uid: str
    modalities: tuple[str, ...]
    anatomical_region: str | None  # SNOMED CT code (MCWG value set)
    procedure: str | None  # display name, the level-2 key
    series: tuple[Series, ...]

    @property
    def instance_count(self) -> int:
        return sum(len(s.sop_instance_uids) for s in self.series)

    def by_location(self) -> dict[str, tuple[Series, ...]]:
        """Series grouped by Retrieve Location UID: one study-level request per location (RAD-160)."""
        out: dict[str, list[Series]] = {}
        for s in self.series:
            out.setdefault(s.retrieve_location_uid, []).append(s)
        return {k: tuple(v) for k, v in out.items()}


@dataclass(frozen=True)
class Patient:
    country: str
    id: str
    issuer: str
    studies: tuple[Study, ...]

    @property
    def fhir_identifier(self) -> str:
        """The token form used by PDQm and ITI-67 (``urn:oid:`` system everywhere in FHIR, §2)."""
        return f"urn:oid:{self.issuer}|{self.id}"


@dataclass(frozen=True)
class TokenRecipe:
    """How to obtain a token at a country's identity provider, as the state file describes it."""

    method: str
    url: str
    form: Mapping[str, str]
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Country:
    code: str
    home_community_id: str
    patient_id_issuer: str
    gateway: str
    pacs: Mapping[str, str]  # Retrieve Location UID -> DICOMweb base URL (ends with '/')
    hcp_token: TokenRecipe | None = None
    treatment_token: TokenRecipe | None = None


@dataclass(frozen=True)
class FederationState:
    countries: Mapping[str, Country]
    patients: tuple[Patient, ...]
    security_enabled: bool
    ca_file: str | None

    def treatment_for(self, patient: Patient, override: str | None = None) -> Country:
        """The consumer's country (B): ``override``, else the first country that is not the patient's."""
        if override:
            if override not in self.countries:
                raise StateError(f"treatment country {override!r} is not in the state file")
            return self.countries[override]
        for code, country in self.countries.items():
            if code != patient.country:
                return country
        raise StateError("a cross-border consultation needs at least two countries")

    def visits(self, override: str | None = None) -> tuple[tuple[Country, Patient, Study], ...]:
        """Every (B, patient of A, study) a consumer can consult (patients not of ``override``, if given)."""
        out = []
        for patient in self.patients:
            if patient.country == override or patient.country not in self.countries:
                continue
            b = self.treatment_for(patient, override)
            out += [(b, patient, study) for study in patient.studies]
        if not out:
            raise StateError(
                f"the catalogue has no study a consumer in {override or 'another country'} can consult"
            )
        return tuple(out)

    def pacs_base(self, country: str, retrieve_location_uid: str) -> str:
        try:
            return self.countries[country].pacs[retrieve_location_uid]
        except KeyError:
            raise StateError(f"no PACS for {retrieve_location_uid} in {country}") from None


def load_state(path: str | os.PathLike[str] | None = None) -> FederationState:
    """Read the state file at ``path`` (or ``$XCWADO_STATE``); raise StateError naming what is wrong."""
    where = path or os.environ.get(STATE_ENV)
    if not where:
        raise StateError(f"no state file: pass --state or set {STATE_ENV} (written by `xcwado up --state`)")
    try:
        raw = json.loads(Path(where).read_text())
    except (OSError, ValueError) as exc:
        raise StateError(f"cannot read state file {where}: {exc}") from None
    try:
        return _parse(raw)
    except (KeyError, TypeError, AttributeError) as exc:
        raise StateError(f"state file {where} does not follow the contract: missing {exc}") from None
    except NcpError as exc:  # a UID or OID that must not reach a URL
        raise StateError(f"state file {where}: {exc.message}") from None


def _parse(raw: Mapping[str, Any]) -> FederationState:
    security = raw.get("security") or {}
    enabled = bool(security.get("enabled"))
    tokens = security.get("tokens") or {}
    countries = {
        code: _country(code, c, tokens.get(code) if enabled else None) for code, c in raw["countries"].items()
    }
    patients = tuple(_patient(p) for p in raw.get("catalogue", {}).get("patients", []))
    return FederationState(countries, patients, enabled, security.get("ca_file"))


def _base(url: str, what: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise StateError(f"{what} {url!r} is not an http(s) base URL")
    return url.rstrip("/")


def _country(code: str, c: Mapping[str, Any], tokens: Mapping[str, Any] | None) -> Country:
    pacs = {
        validate_uid(rluid, "Retrieve Location UID"): _base(url, f"{code} PACS") + "/"
        for rluid, url in c["pacs"].items()
    }
    return Country(
        code=code,
        home_community_id=validate_oid(c["home_community_id"], "homeCommunityId"),
        patient_id_issuer=validate_oid(c["patient_id_issuer"], "patient ID issuer"),
        gateway=_base(c["gateway"], f"{code} gateway"),
        pacs=pacs,
        hcp_token=_recipe(tokens.get("hcp_token")) if tokens else None,
        treatment_token=_recipe(tokens.get("treatment_token")) if tokens else None,
    )


def _recipe(raw: Mapping[str, Any] | None) -> TokenRecipe | None:
    if not raw or "url" not in raw:
        return None
    return TokenRecipe(
        method=str(raw.get("method", "POST")).upper(),
        url=_base(str(raw["url"]), "token endpoint"),
        form={str(k): str(v) for k, v in (raw.get("form") or {}).items()},
        headers={str(k): str(v) for k, v in (raw.get("headers") or {}).items()},
    )


def _patient(p: Mapping[str, Any]) -> Patient:
    return Patient(
        country=str(p["country"]),
        id=str(p["id"]),
        issuer=validate_oid(str(p["issuer"]), "patient ID issuer"),
        studies=tuple(_study(s) for s in p.get("studies", [])),
    )


def _study(s: Mapping[str, Any]) -> Study:
    series = tuple(
        Series(
            series_instance_uid=validate_uid(x["series_instance_uid"], "Series Instance UID"),
            retrieve_location_uid=validate_uid(x["retrieve_location_uid"], "Retrieve Location UID"),
            sop_instance_uids=tuple(
                validate_uid(u, "SOP Instance UID") for u in x.get("sop_instance_uids", [])
            ),
        )
        for x in s["series"]
    )
    return Study(
        study_instance_uid=validate_uid(s["study_instance_uid"], "Study Instance UID"),
        modalities=tuple(s.get("modalities", [])),
        anatomical_region=s.get("anatomical_region"),
        procedure=s.get("procedure"),
        series=series,
    )
