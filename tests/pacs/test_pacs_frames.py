"""Retrieve Frames (PS3.18 10.4.1.1.3): 1-based frame lists, uncompressed as octet-stream by default,
compressed frames in their own media type when asked for, bad lists refused, never a 5xx."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from unittest import mock

import numpy as np
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pacs_corpus import CorpusFile, by_syntax, corpus, corpus_pacs
from pacs_harness import Pacs, decode
from pacs_samples import ct_dataset, part10
from pydicom.encaps import generate_frames

from ncp.dicom.uids import deterministic_uid

EVLE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
RLE = "1.2.840.10008.1.2.5"
OCTET = 'multipart/related; type="application/octet-stream"'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pacs, list[CorpusFile]]]:
    """One PACS holding pydicom's test files with pixel data, every transfer syntax family among them."""
    with corpus_pacs(tmp_path_factory.mktemp("pacs-frames")) as running:
        yield running


def frame_array(body: bytes, reference: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    """An octet-stream frame read with the dtype and shape of one decoded reference frame."""
    return np.frombuffer(body, dtype=reference.dtype.newbyteorder("<")).reshape(reference.shape)


def reference_frames(item: CorpusFile) -> np.ndarray:  # type: ignore[type-arg]
    arr = item.decoded()
    return arr if item.frames > 1 else arr[np.newaxis]


def representative() -> list[CorpusFile]:
    """Per transfer syntax: a single-frame and (where present) a multi-frame file, interleaved samples."""
    chosen: dict[tuple[str, bool], CorpusFile] = {}
    for item in corpus():
        ds = pydicom.dcmread(io.BytesIO(item.data), stop_before_pixels=True)
        planar = int(ds.get("PlanarConfiguration", 0)) == 1 and item.transfer_syntax == EVLE
        if ds.get("PhotometricInterpretation") == "YBR_FULL_422" or planar or int(ds.BitsAllocated) == 1:
            continue  # native bytes in a layout that differs from pydicom's decoded array
        chosen.setdefault((item.transfer_syntax, item.frames > 1), item)
    return list(chosen.values())


@pytest.mark.parametrize("item", representative(), ids=lambda f: f"{f.name}")
def test_every_frame_as_octet_stream_equals_the_decoded_frame(
    served: tuple[Pacs, list[CorpusFile]], item: CorpusFile
) -> None:
    pacs, stored = served
    assert item in stored
    expected = reference_frames(item)
    numbers = list(range(item.frames, 0, -1))  # in the order asked for, not the stored order

    response = pacs.get(item.path + "/frames/" + ",".join(map(str, numbers)), accept=OCTET)

    assert response.status_code == 200, response.headers.get("warning")
    assert response.headers["content-type"].startswith(OCTET)
    parts = decode(response)
    assert len(parts) == len(numbers)
    for number, part in zip(numbers, parts, strict=True):
        assert part.content_type == f"application/octet-stream; transfer-syntax={EVLE}"
        assert part.headers["content-location"] == f"{pacs.base}{item.path}/frames/{number}"
        assert np.array_equal(frame_array(part.body, expected[number - 1]), expected[number - 1])


def test_compressed_frames_come_in_their_own_media_type_byte_for_byte(
    served: tuple[Pacs, list[CorpusFile]],
) -> None:
    pacs, _ = served
    rle = by_syntax(RLE, multiframe=True)
    jpeg = by_syntax(JPEG_BASELINE)
    for item, media_type in ((rle, "image/x-dicom-rle"), (rle, "image/dicom-rle"), (jpeg, "image/jpeg")):
        stored_frames = list(
            generate_frames(pydicom.dcmread(io.BytesIO(item.data)).PixelData, number_of_frames=item.frames)
        )
        response = pacs.get(
            item.path + "/frames/" + ",".join(str(n) for n in range(1, item.frames + 1)),
            accept=f"multipart/related; type={media_type}",
        )

        assert response.status_code == 200, response.headers.get("warning")
        parts = decode(response)
        assert [p.content_type for p in parts] == [
            f"{media_type}; transfer-syntax={item.transfer_syntax}"
        ] * item.frames
        assert [p.body for p in parts] == stored_frames


def test_ohif_accept_with_transfer_syntax_star_gets_compressed_frames_as_stored(
    served: tuple[Pacs, list[CorpusFile]],
) -> None:
    """OHIF asks ``multipart/related; type=application/octet-stream; transfer-syntax=*``."""
    pacs, _ = served
    jpeg = by_syntax(JPEG_BASELINE)
    native = by_syntax(EVLE)

    compressed = pacs.get(jpeg.path + "/frames/1", accept=OCTET + "; transfer-syntax=*")
    uncompressed = pacs.get(native.path + "/frames/1", accept=OCTET + "; transfer-syntax=*")

    assert compressed.status_code == uncompressed.status_code == 200
    assert decode(compressed)[0].content_type == f"image/jpeg; transfer-syntax={JPEG_BASELINE}"
    assert decode(compressed)[0].body[:2] == b"\xff\xd8"
    assert decode(uncompressed)[0].content_type == f"application/octet-stream; transfer-syntax={EVLE}"


@pytest.mark.parametrize("accept", [None, "*/*"])
def test_without_a_preference_frames_are_uncompressed(
    served: tuple[Pacs, list[CorpusFile]], accept: str | None
) -> None:
    pacs, _ = served
    jpeg = by_syntax(JPEG_BASELINE)

    response = pacs.get(jpeg.path + "/frames/1", accept=accept)

    (part,) = decode(response)
    assert part.content_type == f"application/octet-stream; transfer-syntax={EVLE}"
    expected = reference_frames(jpeg)[0]
    assert np.array_equal(frame_array(part.body, expected), expected)


def test_a_single_frame_may_be_a_bare_body(served: tuple[Pacs, list[CorpusFile]]) -> None:
    pacs, _ = served
    native = by_syntax(EVLE, multiframe=False)

    response = pacs.get(native.path + "/frames/1", accept="application/octet-stream")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/octet-stream")
    expected = reference_frames(native)[0]
    assert np.array_equal(frame_array(response.content, expected), expected)


def multiframe_ct(frames: int = 30, size: int = 128) -> pydicom.Dataset:
    tag = "multiframe"
    ds = ct_dataset(
        deterministic_uid(tag), deterministic_uid(tag, "s"), deterministic_uid(tag, "i"), size=size
    )
    ds.NumberOfFrames = frames
    ramp = np.arange(frames * size * size, dtype=np.int16).reshape(frames, size, size) % 4000
    ds.PixelData = ramp.tobytes()
    return ds


class CountingFile(io.RawIOBase):
    """A file whose reads are tallied, to see how much of it a request touched."""

    def __init__(self, raw: BinaryIO, tally: list[int]) -> None:
        self.raw, self.tally = raw, tally

    def read(self, size: int | None = -1) -> bytes:
        data = self.raw.read(-1 if size is None else size)
        self.tally.append(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def tell(self) -> int:
        return self.raw.tell()

    def close(self) -> None:
        self.raw.close()


def test_only_the_frames_asked_for_are_read_from_a_native_multiframe(pacs: Pacs) -> None:
    """Frame 17 of 30: the header, a seek, one frame's bytes; not the whole object."""
    ds = multiframe_ct()
    data = part10(ds)
    assert pacs.stow([data]).status_code == 200
    path = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    expected = pydicom.dcmread(io.BytesIO(data)).pixel_array[16]
    tally: list[int] = []
    real_open = Path.open

    def counting_open(self: Path, *args: Any, **kwargs: Any) -> Any:
        f = real_open(self, *args, **kwargs)
        return CountingFile(f, tally) if self.name == f"{ds.SOPInstanceUID}.dcm" else f

    with mock.patch.object(Path, "open", counting_open):
        response = pacs.get(path + "/frames/17", accept=OCTET)

    assert response.status_code == 200
    (part,) = decode(response)
    assert np.array_equal(frame_array(part.body, expected), expected)
    assert 0 < sum(tally) < expected.nbytes + 16 * 1024
    assert sum(tally) < len(data) / 10


@pytest.mark.parametrize(
    "frames", ["0", "1,x", "x", "", "1,,2", "-1", "1.5", " 1", "1;2", "9" * 12, ",".join(["1"] * 1001)]
)
def test_malformed_frame_lists_are_400_with_a_warning(
    served: tuple[Pacs, list[CorpusFile]], frames: str
) -> None:
    pacs, _ = served
    native = by_syntax(EVLE)

    response = pacs.get(native.path + "/frames/" + frames, accept=OCTET)

    assert response.status_code in (400, 404) if frames == "" else response.status_code == 400
    assert response.headers["warning"].startswith("299 pacs ")


def test_a_frame_beyond_the_last_is_404_naming_it(served: tuple[Pacs, list[CorpusFile]]) -> None:
    pacs, _ = served
    rle = by_syntax(RLE, multiframe=True)

    response = pacs.get(rle.path + "/frames/1,3", accept=OCTET)

    assert response.status_code == 404
    assert "3" in response.headers["warning"] and "2 frame" in response.headers["warning"]


def test_an_instance_without_pixel_data_has_no_frames(pacs: Pacs) -> None:
    ds = ct_dataset(deterministic_uid("nf"), deterministic_uid("nf-s"), deterministic_uid("nf-i"))
    del ds.PixelData
    assert pacs.stow([part10(ds)]).status_code == 200
    path = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"

    response = pacs.get(path + "/frames/1", accept=OCTET)

    assert response.status_code == 404
    assert "pixel data" in response.headers["warning"]


def test_a_compressed_media_type_the_frames_are_not_in_is_406(
    served: tuple[Pacs, list[CorpusFile]],
) -> None:
    pacs, _ = served
    native = by_syntax(EVLE)

    response = pacs.get(native.path + "/frames/1", accept="multipart/related; type=image/jp2")

    assert response.status_code == 406
    assert response.headers["warning"].startswith("299 pacs ")


def test_dicomweb_client_retrieves_frames(served: tuple[Pacs, list[CorpusFile]]) -> None:
    pacs, _ = served
    client = DICOMwebClient(url=pacs.base)
    multi = by_syntax(RLE, multiframe=True)
    expected = reference_frames(multi)

    frames = client.retrieve_instance_frames(
        multi.study, multi.series, multi.sop, frame_numbers=[2, 1], media_types=("application/octet-stream",)
    )

    assert len(frames) == 2
    assert np.array_equal(frame_array(frames[0], expected[1]), expected[1])
    assert np.array_equal(frame_array(frames[1], expected[0]), expected[0])


def test_dicomweb_client_default_and_jpeg_frame_requests(served: tuple[Pacs, list[CorpusFile]]) -> None:
    """Without media types dicomweb-client sends a bare ``multipart/related``; with ``image/jpeg`` it gets the
    stored JPEG frame."""
    pacs, _ = served
    client = DICOMwebClient(url=pacs.base)
    jpeg = by_syntax(JPEG_BASELINE)
    stored = next(generate_frames(pydicom.dcmread(io.BytesIO(jpeg.data)).PixelData, number_of_frames=1))
    expected = reference_frames(jpeg)[0]

    default = client.retrieve_instance_frames(jpeg.study, jpeg.series, jpeg.sop, frame_numbers=[1])
    compressed = client.retrieve_instance_frames(
        jpeg.study, jpeg.series, jpeg.sop, frame_numbers=[1], media_types=("image/jpeg",)
    )

    assert np.array_equal(frame_array(default[0], expected), expected)
    assert compressed == [stored]
