"""pydicom's bundled test files with pixel data, made storable and loaded into a PACS through STOW-RS.

Read from pydicom's own ``test_files`` folder (what ``pydicom.data.get_testdata_files()`` lists
offline, without its download attempt). A few files lack identity UIDs that STOW rightly insists on
(Study/Series Instance UID) and many share a SOP Instance UID: each file gets its own SOP Instance
UID and missing UIDs are filled in; the pixel data and its transfer syntax are never touched.
Files that pydicom itself cannot decode or warns about, or that STOW refuses for their encoding
(Big Endian, Deflated, malformed), are left out.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pydicom.data
from pacs_harness import Pacs

from ncp.dicom.uids import deterministic_uid, is_valid_uid
from ncp.pacs.app import PacsSettings, create_pacs_app
from ncp.server import serve_in_thread

__all__ = ["CorpusFile", "by_syntax", "corpus", "corpus_pacs", "load_corpus"]

_TEST_FILES = Path(pydicom.data.__file__).parent / "test_files"
_REFUSED_AT_STOW = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}


@dataclass(frozen=True)
class CorpusFile:
    name: str
    data: bytes
    study: str
    series: str
    sop: str
    transfer_syntax: str
    frames: int

    @property
    def path(self) -> str:
        return f"/studies/{self.study}/series/{self.series}/instances/{self.sop}"

    def decoded(self) -> np.ndarray:  # type: ignore[type-arg]
        """What a client decoding the original file directly with pydicom gets (all frames)."""
        return pydicom.dcmread(io.BytesIO(self.data)).pixel_array


def _storable(path: Path) -> CorpusFile | None:
    with warnings.catch_warnings():
        # The suite runs the PACS in-process with warnings as errors: a file pydicom warns about
        # (excess padding, invalid VR values) would fail there for a reason that is not ours.
        warnings.simplefilter("error")
        try:
            ds = pydicom.dcmread(path)
            ts = str(ds.file_meta.TransferSyntaxUID)
            if "PixelData" not in ds or ts in _REFUSED_AT_STOW:
                return None
            ds.pixel_array  # noqa: B018 -- only files pydicom can decode have a reference to compare with
            all(True for _ in ds.iterall())  # every value converted, as STOW does
            data = _with_identity(ds, path)
        except Exception:
            return None
    frames = int(ds.get("NumberOfFrames") or 1)
    uids = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
    return CorpusFile(path.name, data, *uids, ts, frames)


def _with_identity(ds: pydicom.Dataset, path: Path) -> bytes:
    """Re-written with a SOP Instance UID of its own: many bundled files share one (MR_small in each
    syntax), and a PACS keeps one instance per UID. Missing study and series UIDs are filled in."""
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not is_valid_uid(str(ds.get(keyword, ""))):
            setattr(ds, keyword, deterministic_uid("corpus", path.name, keyword))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = deterministic_uid("corpus", path.name)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def by_syntax(transfer_syntax: str, *, multiframe: bool | None = None) -> CorpusFile:
    """The first corpus file stored in ``transfer_syntax`` (and multi-frame or not, if given)."""
    return next(
        f for f in corpus() if f.transfer_syntax == transfer_syntax and multiframe in (None, f.frames > 1)
    )


@cache
def corpus() -> tuple[CorpusFile, ...]:
    """Every bundled file with decodable pixel data."""
    return tuple(item for path in sorted(_TEST_FILES.rglob("*.dcm")) if (item := _storable(path)))


@contextmanager
def corpus_pacs(storage: Path) -> Iterator[tuple[Pacs, list[CorpusFile]]]:
    """A PACS over real HTTP (uvicorn thread) holding the corpus; yields it and the files it stored."""
    with (
        serve_in_thread(create_pacs_app(PacsSettings(storage_dir=storage))) as url,
        httpx.Client(timeout=60) as http,
    ):
        pacs = Pacs(url + "/dicom-web", storage, http)
        yield pacs, load_corpus(pacs)


def load_corpus(pacs: Pacs) -> list[CorpusFile]:
    """STOW each file on its own (one refusal must not hide the others); return those stored."""
    stored = []
    for item in corpus():
        if pacs.stow([item.data]).status_code == 200:
            stored.append(item)
    return stored
