"""Check a KOS imaging study manifest against the MCWG checklist §3 and the MADO KOS constraints.

Each check names the MCWG adoption checklist item it follows (``3.4``, ``3.5``, ``3.6.4``, ``3.9.2``,
``3.11``) or the section of IHE RAD MADO Rev 1.1 Vol 3 it enforces (``6.X.2.x``; Table 4.3-1 for the
KOS <-> FHIR mapping). With a resolver, every referenced instance is looked up where the manifest says it is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import httpx
from pydicom.dataset import Dataset

from ncp.codes import KOS_SOP_CLASS
from ncp.dicom.kos import TITLE_MANIFEST, TITLE_OF_INTEREST, read_dataset, read_manifest
from ncp.dicom.uids import is_valid_uid, validate_oid, validate_uid
from ncp.errors import InvalidRequest, UpstreamError
from ncp.model import Manifest, ManifestSeries

__all__ = ["Check", "CheckStatus", "Resolver", "ValidationReport", "http_resolver", "validate_manifest"]

CheckStatus = Literal["pass", "fail", "warn", "n/a"]
Resolver = Callable[[str, str, str], bool]  # (study, series, sop) -> the instance exists

_MADO_TITLES = {"MADOTEMP001"}
_KIN_TITLES = {TITLE_OF_INTEREST.code}
# CID 7010 titles of rejection notes (113001 Rejected for Quality Reasons, ...; IHE IOCM)
_REJECTION_TITLES = {"113001", "113037", "113038", "113039"}
_SHOWN = 3  # how many offending UIDs a detail names


@dataclass(frozen=True)
class Check:
    item: str
    title: str
    status: CheckStatus
    detail: str = ""


@dataclass
class ValidationReport:
    checks: list[Check] = field(default_factory=list)
    manifest: Manifest | None = None

    @property
    def ok(self) -> bool:
        return all(c.status != "fail" for c in self.checks)

    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.status == "fail"]

    def check(self, item: str) -> Check:
        """The check with this item name (KeyError if it was not run)."""
        for c in self.checks:
            if c.item == item:
                return c
        raise KeyError(item)

    def render(self) -> str:
        """A plain-text table, one row per check, and a verdict line."""
        rows = [("ITEM", "STATUS", "CHECK", "DETAIL")] + [
            (c.item, c.status.upper(), c.title, c.detail) for c in self.checks
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths) + "  " + "-" * 6)
        fails = len(self.failed())
        lines.append(f"\n{'OK' if self.ok else 'FAILED'}: {len(self.checks)} checks, {fails} failed")
        return "\n".join(line.rstrip() for line in lines)


def validate_manifest(source: bytes | Dataset, *, resolve: Resolver | None = None) -> ValidationReport:
    """Run every check on ``source``; unreadable or non-KOS input gives a report with one failed check."""
    try:
        ds = read_dataset(bytes(source)) if isinstance(source, bytes | bytearray) else source
        manifest = read_manifest(ds)
    except InvalidRequest as exc:
        return ValidationReport([Check("KOS", "DICOM Key Object Selection Document", "fail", exc.message)])
    checks = [_kos_check(ds, manifest), *_patient_checks(ds), *_request_checks(ds, manifest)]
    checks += [_timezone_check(ds), _single_study_check(ds, manifest), _references_check(ds)]
    checks += _series_checks(manifest, is_kin=manifest.title.code in _KIN_TITLES)
    checks.append(_kin_check(manifest))
    if manifest.encoding == "MADO":
        checks += _mado_checks(ds, manifest)
    if resolve is not None:
        checks.append(_resolve_check(manifest, resolve))
    return ValidationReport(checks, manifest)


# --------------------------------------------------------------------------- individual checks


def _names(uids: list[str]) -> str:
    shown = ", ".join(uids[:_SHOWN])
    return shown + (f" (+{len(uids) - _SHOWN} more)" if len(uids) > _SHOWN else "")


def _kos_check(ds: Dataset, manifest: Manifest) -> Check:
    title = manifest.title
    refs = manifest.instance_count()
    detail = f"encoding {manifest.encoding}, title ({title.code}, {title.display!r}), {refs} refs"
    known = {TITLE_MANIFEST.code, *_MADO_TITLES, *_KIN_TITLES}
    if ds.get("Modality") != "KO":
        return Check("KOS", "DICOM Key Object Selection Document", "fail", f"Modality is not KO; {detail}")
    if title.code in _REJECTION_TITLES:  # a rejection note withdraws instances: it is no manifest
        return Check("KOS", "DICOM Key Object Selection Document", "fail", f"a rejection note; {detail}")
    status: CheckStatus = "pass" if title.code in known else "warn"
    return Check("KOS", "DICOM Key Object Selection Document", status, detail)


def _patient_checks(ds: Dataset) -> list[Check]:
    """MCWG 3.4 / MADO 6.X.2.5: national Patient ID with its issuer, qualifiers and Other Patient IDs."""
    patient_id, issuer = str(ds.get("PatientID", "")), str(ds.get("IssuerOfPatientID", ""))
    if not patient_id:
        main = Check("3.4", "Patient ID with Issuer of Patient ID", "fail", "Patient ID (0010,0020) is empty")
    elif not issuer:
        main = Check(
            "3.4", "Patient ID with Issuer of Patient ID", "fail", "Issuer of Patient ID (0010,0021) missing"
        )
    else:
        main = Check("3.4", "Patient ID with Issuer of Patient ID", "pass", f"{patient_id} / {issuer}")
    return [main, _qualifier_check(ds), _other_ids_check(ds, patient_id)]


def _qualifier_check(ds: Dataset) -> Check:
    title = "Issuer of Patient ID Qualifiers: Universal Entity ID, type ISO"
    items = ds.get("IssuerOfPatientIDQualifiersSequence") or []
    if not items:
        return Check(
            "3.4-qualifiers", title, "fail", "Issuer of Patient ID Qualifiers Sequence (0010,0024) missing"
        )
    oid, kind = str(items[0].get("UniversalEntityID", "")), str(items[0].get("UniversalEntityIDType", ""))
    if not oid:
        return Check("3.4-qualifiers", title, "fail", "Universal Entity ID (0040,0032) missing")
    if kind != "ISO":
        return Check("3.4-qualifiers", title, "fail", f"Universal Entity ID Type is {kind!r}, expected 'ISO'")
    try:
        validate_oid(oid)
    except InvalidRequest:
        return Check("3.4-qualifiers", title, "warn", f"Universal Entity ID {oid!r} is not an OID")
    return Check("3.4-qualifiers", title, "pass", oid)


def _other_ids_check(ds: Dataset, patient_id: str) -> Check:
    title = "Other Patient IDs Sequence repeats the primary ID (MADO 6.X.2.5)"
    ids = [str(i.get("PatientID", "")) for i in ds.get("OtherPatientIDsSequence") or []]
    if patient_id and patient_id in ids:
        return Check("3.4-other-ids", title, "pass", f"{len(ids)} identifier(s)")
    return Check(
        "3.4-other-ids", title, "warn", "Other Patient IDs Sequence (0010,1002) lacks the Patient ID"
    )


def _request_checks(ds: Dataset, manifest: Manifest) -> list[Check]:
    """MADO 6.X.2.6.1 / 6.X.2.8: accession numbers and placer orders, each with its issuer."""
    requests = list(ds.get("ReferencedRequestSequence") or [])
    title = "Referenced Request Sequence: accession + issuer, placer order + issuer"
    if not requests:
        return [Check("6.X.2.8", title, "fail", "Referenced Request Sequence (0040,A370) is empty")]
    problems = []
    for n, r in enumerate(requests, 1):
        if not r.get("AccessionNumber"):
            problems.append(f"item {n}: no Accession Number")
        elif not r.get("IssuerOfAccessionNumberSequence"):
            problems.append(f"item {n}: no Issuer of Accession Number Sequence")
        if not r.get("PlacerOrderNumberImagingServiceRequest"):
            problems.append(f"item {n}: no Placer Order Number")
        elif not r.get("OrderPlacerIdentifierSequence"):
            problems.append(f"item {n}: no Order Placer Identifier Sequence")
    accessions, orders = ", ".join(manifest.accession_numbers), ", ".join(manifest.placer_order_numbers)
    detail = "; ".join(problems) or f"accessions {accessions}; orders {orders}"
    checks = [Check("6.X.2.8", title, "fail" if problems else "pass", detail)]
    checks.append(_study_accession_check(ds, manifest))
    return checks


def _study_accession_check(ds: Dataset, manifest: Manifest) -> Check:
    """MADO: the single accession in General Study with its issuer; empty when several (6.X.2.6.1)."""
    title = "General Study accession: the single one with issuer, empty when several"
    accession = str(ds.get("AccessionNumber", ""))
    in_requests = {str(r.get("AccessionNumber", "")) for r in ds.get("ReferencedRequestSequence") or []} - {
        ""
    }
    if accession and not ds.get("IssuerOfAccessionNumberSequence"):
        return Check("6.X.2.6.1", title, "fail", f"Accession Number {accession} has no issuer (0008,0051)")
    if accession and len(in_requests) > 1:
        return Check("6.X.2.6.1", title, "fail", "several accessions in (0040,A370) but one in General Study")
    if not accession and len(in_requests) == 1 and manifest.encoding == "MADO":
        return Check("6.X.2.6.1", title, "warn", "single accession not copied to General Study (0008,0050)")
    return Check("6.X.2.6.1", title, "pass", accession or "empty (accessions in 0040,A370)")


def _timezone_check(ds: Dataset) -> Check:
    title = "Timezone Offset From UTC (MADO SOP Common R+)"
    value = str(ds.get("TimezoneOffsetFromUTC", ""))
    return Check("6.X.2.13", title, "pass" if value else "fail", value or "(0008,0201) missing")


def _single_study_check(ds: Dataset, manifest: Manifest) -> Check:
    """One manifest, one study: the evidence references the KOS's own study only (MADO 6.X.2)."""
    title = "Evidence references exactly the manifest's study"
    studies = [str(s.get("StudyInstanceUID", "")) for s in ds.CurrentRequestedProcedureEvidenceSequence]
    others = [s for s in studies if s != manifest.study_instance_uid]
    if others or not studies:
        return Check("6.X.2", title, "fail", f"evidence references other studies: {_names(others)}")
    return Check("6.X.2", title, "pass", manifest.study_instance_uid)


def _evidence_uids(ds: Dataset) -> set[str]:
    return {
        str(ref.get("ReferencedSOPInstanceUID", ""))
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.get("ReferencedSeriesSequence") or []
        for ref in series.get("ReferencedSOPSequence") or []
    }


def _content_refs(items: list[Dataset]) -> Iterator[str]:
    for item in items:
        if item.get("ValueType") in ("IMAGE", "COMPOSITE", "WAVEFORM"):
            for ref in item.get("ReferencedSOPSequence") or []:
                yield str(ref.get("ReferencedSOPInstanceUID", ""))


def _references_check(ds: Dataset) -> Check:
    """PS3.3 C.17.6.2.1 / TID 2010: the content tree references exactly the evidence instances."""
    title = "TID 2010 content references match the evidence sequence"
    evidence, content = _evidence_uids(ds), set(_content_refs(list(ds.get("ContentSequence") or [])))
    missing, extra = sorted(evidence - content), sorted(content - evidence)
    if missing or extra:
        parts = [f"not in content: {_names(missing)}"] if missing else []
        parts += [f"not in evidence: {_names(extra)}"] if extra else []
        return Check("TID2010", title, "fail", "; ".join(parts))
    return Check("TID2010", title, "pass", f"{len(evidence)} instances")


def _series_checks(manifest: Manifest, *, is_kin: bool) -> list[Check]:
    """MCWG 3.5, 3.6.4, 3.9.2 and the MADO 6.X.2.14 routing fields, per referenced series."""
    series = manifest.series
    url = _routing_check(
        "3.9.2",
        "Retrieve URL (0008,1190) per series: WADO-RS base URI",
        {s.series_instance_uid: s.retrieve_url for s in series},
        _is_http_url,
        "not an http(s) URL",
    )
    rluid = _routing_check(
        "6.X.2.14",
        "Retrieve Location UID (0040,E011) per series",
        {s.series_instance_uid: s.retrieve_location_uid for s in series},
        is_valid_uid,
        "not a valid UID",
    )
    return [_modality_check(manifest, is_kin), _description_check(series, is_kin), url, rluid]


def _routing_check(
    item: str, title: str, values: dict[str, str | None], valid: Callable[[str], bool], invalid: str
) -> Check:
    missing = [uid for uid, v in values.items() if not v]
    wrong = [uid for uid, v in values.items() if v and not valid(v)]
    if missing or wrong:
        parts = [f"missing in {_names(missing)}"] if missing else []
        parts += [f"{invalid} in {_names(wrong)}"] if wrong else []
        return Check(item, title, "fail", "; ".join(parts))
    return Check(item, title, "pass", ", ".join(sorted({v for v in values.values() if v})))


def _is_http_url(url: str) -> bool:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


def _modality_check(manifest: Manifest, is_kin: bool) -> Check:
    """MCWG 3.5: the study's modalities (MADO: Image Library Modality items; MCWG: Modalities in Study or
    series Modality)."""
    title = "Modalities in study"
    if is_kin:
        return Check("3.5", title, "n/a", "a KIN, not a study manifest")
    if manifest.modalities:
        return Check("3.5", title, "pass", ", ".join(manifest.modalities))
    return Check("3.5", title, "fail", "no study-level modality (TID 1600 Modality / Modalities in Study)")


def _description_check(series: tuple[ManifestSeries, ...], is_kin: bool) -> Check:
    title = "Series Description per series"
    if is_kin:
        return Check("3.6.4", title, "n/a", "a KIN, not a study manifest")
    missing = [s.series_instance_uid for s in series if not s.description]
    if missing:
        return Check("3.6.4", title, "fail", f"missing in {_names(missing)}")
    return Check("3.6.4", title, "pass", f"{len(series)} series described")


def _kin_check(manifest: Manifest) -> Check:
    """MCWG 3.11: key images per IHE KIN, the KIN referenced from the manifest as an instance; MCWG
    flags must point at a KIN the manifest references."""
    title = "Key images: KIN referenced and identified"
    referenced = {
        i.sop_instance_uid for s in manifest.series for i in s.instances if i.sop_class_uid == KOS_SOP_CLASS
    }
    if manifest.title.code in _KIN_TITLES:
        return Check("3.11", title, "n/a", "this object is itself a KIN")
    if not referenced and not manifest.key_image_uids():
        return Check("3.11", title, "n/a", "no key images referenced")
    unknown = sorted(set(manifest.kin_sop_instance_uids) - referenced)
    if unknown:
        return Check("3.11", title, "fail", f"flagged KIN not referenced as an instance: {_names(unknown)}")
    unidentified = sorted(referenced - set(manifest.kin_sop_instance_uids))
    if manifest.encoding == "MADO" and unidentified:
        return Check("3.11", title, "warn", f"KOS without Document Title 113000: {_names(unidentified)}")
    detail = f"{len(referenced)} KIN, {len(manifest.key_image_uids())} images flagged"
    if manifest.encoding == "MCWG" and not manifest.key_image_uids():
        return Check("3.11", title, "warn", f"{detail} (no Related Series Sequence flags)")
    return Check("3.11", title, "pass", detail)


def _mado_checks(ds: Dataset, manifest: Manifest) -> list[Check]:
    """MADO 6.X.2.9: title, TID 1600 Image Library with study descriptors, one group per series."""
    title_ok = manifest.title.code in _MADO_TITLES
    checks = [
        Check(
            "MADO-title",
            "Document title (MADOTEMP001, 99IHE, 'Manifest with Description')",
            "pass" if title_ok else "fail",
            f"({manifest.title.code}, {manifest.title.display!r})",
        )
    ]
    library = next(
        (
            i
            for i in ds.get("ContentSequence") or []
            if _concept(i) == "111028" and i.get("ValueType") == "CONTAINER"
        ),
        None,
    )
    if library is None:
        checks.append(Check("MADO-TID1600", "Image Library (111028) container", "fail", "no Image Library"))
        return checks
    items = list(library.get("ContentSequence") or [])
    study_level = {_concept(i) for i in items}
    missing = [n for c, n in (("121139", "Modality"), ("123014", "Target Region")) if c not in study_level]
    if not study_level & {"MADOTEMP009", "131565"}:
        missing.append("Number of Study Related Series")
    checks.append(
        Check(
            "MADO-TID1600",
            "Image Library with study-level Modality, Target Region, series count",
            "fail" if missing else "pass",
            f"missing {', '.join(missing)}" if missing else f"{len(items)} items",
        )
    )
    checks.append(_group_check(items, manifest))
    return checks


def _concept(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence") or []
    return str(names[0].get("CodeValue", "")) if names else ""


def _group_check(items: list[Dataset], manifest: Manifest) -> Check:
    """One Image Library Group (126200) per referenced series, carrying its Series Instance UID and an
    entry for each instance; IMAGE entries carry an Instance Number. MADO maps Instance Number from IMAGE
    entries only (MADO Table 4.3-1): a COMPOSITE entry (a key object note) has none, as in MADO_KOS_B."""
    title = "Image Library Group per series, IMAGE entries with Instance Number"
    groups = {_group_uid(g): _entry_types(g) for g in items if _concept(g) == "126200"}
    problems = []
    for s in manifest.series:
        entries = groups.get(s.series_instance_uid)
        if entries is None:
            problems.append(f"no group for series {s.series_instance_uid}")
            continue
        missing = [i.sop_instance_uid for i in s.instances if i.sop_instance_uid not in entries]
        unnumbered = [
            i.sop_instance_uid
            for i in s.instances
            if entries.get(i.sop_instance_uid) == "IMAGE" and i.instance_number is None
        ]
        if missing:
            problems.append(f"series {s.series_instance_uid} lacks entries for {_names(missing)}")
        if unnumbered:
            problems.append(f"no Instance Number for IMAGE entries {_names(unnumbered)}")
    status: CheckStatus = "fail" if problems else "pass"
    return Check("MADO-groups", title, status, "; ".join(problems) or f"{len(groups)} groups")


def _group_uid(group: Dataset) -> str:
    children = group.get("ContentSequence") or []
    return next((str(c.get("UID", "")) for c in children if _concept(c) == "112002"), "")


def _entry_types(group: Dataset) -> dict[str, str]:
    """SOP Instance UID -> value type (IMAGE, COMPOSITE, WAVEFORM) of each library entry of a group."""
    return {
        str(ref.get("ReferencedSOPInstanceUID", "")): str(item.get("ValueType"))
        for item in group.get("ContentSequence") or []
        if item.get("ValueType") in ("IMAGE", "COMPOSITE", "WAVEFORM")
        for ref in item.get("ReferencedSOPSequence") or []
    }


def _resolve_check(manifest: Manifest, resolve: Resolver) -> Check:
    """Every referenced instance exists where the manifest says (MADO X.1.1.1: guaranteed available)."""
    title = "Every referenced instance resolves"
    missing: list[str] = []
    total = 0
    try:
        for s in manifest.series:
            for i in s.instances:
                total += 1
                if not resolve(manifest.study_instance_uid, s.series_instance_uid, i.sop_instance_uid):
                    missing.append(i.sop_instance_uid)
    except Exception as exc:  # the resolver talks to a PACS: report its failure, do not crash the report
        return Check("resolve", title, "fail", f"lookup failed: {type(exc).__name__}: {exc}"[:200])
    if missing:
        return Check("resolve", title, "fail", f"{len(missing)} of {total} not found: {_names(missing)}")
    return Check("resolve", title, "pass", f"{total} instances found")


# --------------------------------------------------------------------------- QIDO-RS resolver


def http_resolver(dicomweb_base: str, client: httpx.Client) -> Resolver:
    """A resolver that asks a QIDO-RS service (PS3.18 10.6): it lists each series' instances once
    (``GET {base}/studies/{st}/series/{se}/instances``) and, for a UID not in that list (the server may
    cap list sizes), asks for the instance by ``SOPInstanceUID``."""
    base = dicomweb_base.rstrip("/")
    cache: dict[tuple[str, str], set[str]] = {}

    def query(study: str, series: str, params: dict[str, str]) -> set[str]:
        url = f"{base}/studies/{study}/series/{series}/instances"
        response = client.get(url, params=params, headers={"Accept": "application/dicom+json"})
        if response.status_code in (204, 404):
            return set()
        if response.status_code != 200:
            raise UpstreamError(f"QIDO-RS {url} answered {response.status_code}")
        return {str(uid) for obj in response.json() for uid in obj.get("00080018", {}).get("Value", [])}

    def resolve(study: str, series: str, sop: str) -> bool:
        for uid, name in (
            (study, "Study Instance UID"),
            (series, "Series Instance UID"),
            (sop, "SOP Instance UID"),
        ):
            validate_uid(uid, name)
        key = (study, series)
        if key not in cache:
            cache[key] = query(study, series, {})
        if sop in cache[key]:
            return True
        return sop in query(study, series, {"SOPInstanceUID": sop})

    return resolve
