"""The portal specifications' harness: the seeded federation and a browser-less clinician."""

from __future__ import annotations

import re
from dataclasses import dataclass

import httpx

from ncp.federation import Federation
from ncp.model import PatientRecord, StudyRecord
from ncp.publish import Published
from ncp.synth.catalogue import MARKUP_FAMILY

__all__ = ["Clinician", "Portal", "csrf_of"]


@dataclass(repr=False)
class Portal:
    fed: Federation
    published: dict[str, Published]

    @property
    def gateway(self) -> str:
        return self.fed.plan.endpoints["AT"].gateway

    @property
    def url(self) -> str:
        return self.gateway + "/portal/"

    def fr(self) -> Published:
        return self.published["FR"]

    def ct_study(self) -> StudyRecord:
        """A CT study of FR whose report is published (publication A)."""
        return next(
            s
            for s in self.fr().data.studies
            if s.modalities == ("CT",)
            and s.study_instance_uid in self.fr().reports
            and s.patient.family != MARKUP_FAMILY
        )

    def markup_patient(self) -> PatientRecord:
        return next(p for p in self.fr().data.patients if p.family == MARKUP_FAMILY)


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


class Clinician:
    """A browser-less clinician: the portal's forms over httpx, cookies kept like a browser's."""

    def __init__(self, portal: Portal) -> None:
        self.portal = portal
        self.http = httpx.Client(base_url=portal.gateway, follow_redirects=True, timeout=60)
        self.page = self.http.get("/portal/")

    def post(self, path: str, **form: str) -> httpx.Response:
        self.page = self.http.post(path, data={"csrf": csrf_of(self.page.text), **form})
        return self.page

    def sign_in(self) -> httpx.Response:
        return self.post("/portal/signin", subject="dr-wagner", organisation="LKH Hochwald", role="2211")

    def identify(self, patient: PatientRecord) -> httpx.Response:
        return self.post("/portal/patient", issuer=patient.issuer, patient_id=patient.id)

    def links(self, kind: str) -> list[str]:
        return [
            u.replace("&amp;", "&") for u in re.findall(rf'href="(/portal/{kind}/[^"]+)"', self.page.text)
        ]

    def close(self) -> None:
        self.http.close()
