"""The test-side view of a running PACS (kept out of conftest so test modules can import it)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pacs_samples import Sample

from ncp.dicom.multipart import (
    DecodedPart,
    MultipartDecoder,
    encode_multipart_bytes,
    multipart_content_type,
    new_boundary,
)

__all__ = ["DICOM_MULTIPART", "Pacs", "decode"]

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


def decode(response: httpx.Response) -> list[DecodedPart]:
    """The parts of a whole ``multipart/related`` answer, its closing delimiter checked."""
    decoder = MultipartDecoder(response.headers["content-type"])
    parts = decoder.feed(response.content)
    decoder.close()
    return parts


@dataclass
class Pacs:
    """A running PACS: its DICOMweb base URL, storage folder and a client."""

    base: str
    storage: Path
    http: httpx.Client

    def stow(self, bodies: Iterable[bytes], path: str = "/studies", **headers: str) -> httpx.Response:
        boundary = new_boundary()
        return self.http.post(
            self.base + path,
            content=encode_multipart_bytes(bodies, "application/dicom", boundary),
            headers={"Content-Type": multipart_content_type("application/dicom", boundary), **headers},
        )

    def load(self, samples: Iterable[Sample]) -> None:
        response = self.stow([s.data for s in samples])
        assert response.status_code == 200, response.text

    def get(self, path: str, accept: str | None = DICOM_MULTIPART, **params: Any) -> httpx.Response:
        headers = {"Accept": accept} if accept is not None else {}
        return self.http.get(self.base + path, headers=headers, params=params)

    def files(self) -> dict[str, bytes]:
        """Every stored file by relative path: a snapshot to show a request changed nothing."""
        return {str(p.relative_to(self.storage)): p.read_bytes() for p in self.storage.rglob("*.dcm")}
