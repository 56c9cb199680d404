"""A clinician at NCP-B's portal, for the scenarios: its forms and images over the scenario's recorded
HTTP client (cookies kept as a browser keeps them, redirects followed), and the WIA facade's base."""

from __future__ import annotations

import io
import re
from urllib.parse import parse_qsl

import httpx
import numpy as np
from PIL import Image

from ncp.model import PatientRecord
from ncp.scenario.context import ScenarioContext
from ncp.scenario.model import ScenarioFailed, ScenarioSkipped

__all__ = ["PortalUser", "decoded_size", "non_blank"]

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


class PortalUser:
    def __init__(self, ctx: ScenarioContext, country: str) -> None:
        if not ctx.target.secure:
            raise ScenarioSkipped("the portal signs clinicians in at the country's IdP: security must be on")
        self.ctx, self.base = ctx, f"{ctx.gateway(country)}/portal"
        self.page = self.get("/")

    def get(self, path: str, **params: str) -> httpx.Response:
        return self._follow(self.ctx.http("GET", self._url(path), params=params))

    def post(self, path: str, **form: str) -> httpx.Response:
        csrf = _CSRF.search(self.page.text)
        if csrf is None:
            raise ScenarioFailed("the portal's page carries no form token")
        self.page = self._follow(self.ctx.http("POST", self._url(path), data={"csrf": csrf.group(1), **form}))
        return self.page

    def sign_in(self) -> httpx.Response:
        return self.post("/signin", subject="dr-scenario", organisation="Scenario Hospital", role="2211")

    def identify(self, patient: PatientRecord) -> httpx.Response:
        return self.post("/patient", issuer=patient.issuer, patient_id=patient.id)

    def links(self, kind: str) -> list[str]:
        return [
            u.replace("&amp;", "&") for u in re.findall(rf'href="(/portal/{kind}/[^"]+)"', self.page.text)
        ]

    def open(self, link: str) -> httpx.Response:
        path, _, query = link.removeprefix("/portal").partition("?")
        self.page = self.get(path, **dict(parse_qsl(query)))
        return self.page

    def slices(self) -> list[str]:
        return re.findall(r'data-src="/portal([^"]+)"', self.page.text)

    def _url(self, path: str) -> str:
        return self.base + path

    def _follow(self, response: httpx.Response) -> httpx.Response:
        for _ in range(5):
            if response.status_code not in (302, 303) or "location" not in response.headers:
                break
            location = response.headers["location"]
            response = self.ctx.http("GET", location if "://" in location else self._root() + location)
        return response

    def _root(self) -> str:
        return self.base.removesuffix("/portal")


def decoded_size(png: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(png)) as image:
            return image.size
    except OSError:
        return None


def non_blank(png: bytes) -> bool:
    with Image.open(io.BytesIO(png)) as image:
        grey = np.asarray(image.convert("L"), dtype=np.float64)
    return float(grey.max() - grey.min()) > 30
