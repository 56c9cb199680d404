"""The central hub's renderer (MCWG 1.7.2): native instances to PNG for a plain browser."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from pydicom.dataset import Dataset

from ncp.dicom.kos import build_manifest
from ncp.errors import InvalidRequest, NotAcceptable
from ncp.model import StudyRecord
from ncp.portal.render import THUMBNAIL, render
from ncp.synth import CountryData, synthesize, to_part10
from ncp.topology import builtin_topology


@pytest.fixture(scope="module")
def fr() -> CountryData:
    topology = builtin_topology("default")
    urls = {p.retrieve_location_uid: "http://pacs.invalid/dicom-web/" for p in topology.country("FR").pacs}
    return synthesize(topology, "FR", retrieve_urls=urls)


def first(data: CountryData, modality: str) -> tuple[StudyRecord, Dataset]:
    study = next(s for s in data.studies if s.modalities == (modality,))
    return study, next(data.instances(study))


def pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def test_a_ct_slice_renders_to_a_png_of_its_size_and_each_window_preset_changes_it(fr: CountryData) -> None:
    _, ds = first(fr, "CT")
    native = to_part10(ds)
    shown = {p: render(native, preset=p) for p in ("default", "lung", "bone", "soft-tissue")}
    for out in shown.values():
        assert out.media_type == "image/png" and out.frames == 1
        assert (out.width, out.height) == (ds.Columns, ds.Rows)
        assert pixels(out.body).std() > 5  # not a blank square
    assert len({pixels(shown[p].body).tobytes() for p in ("lung", "bone", "soft-tissue")}) == 3
    assert (ds.WindowCenter, ds.WindowWidth) == (40, 400)  # the instance's own window is soft tissue's
    assert shown["default"].body == shown["soft-tissue"].body


def test_a_colour_ultrasound_keeps_its_colour(fr: CountryData) -> None:
    _, ds = first(fr, "US")
    image = pixels(render(to_part10(ds)).body)
    assert image.ndim == 3 and image.shape[2] == 3
    red = (image[..., 0] > 150) & (image[..., 1] < 80)
    assert red.any()


def test_each_frame_of_a_multi_frame_image_renders_on_its_own(fr: CountryData) -> None:
    _, ds = first(fr, "CT")
    frame = ds.pixel_array
    ds.NumberOfFrames = 3
    ds.PixelData = np.stack([frame, frame // 2, np.zeros_like(frame)]).tobytes()
    native = to_part10(ds)
    out = [render(native, frame=f, preset="soft-tissue") for f in range(3)]
    assert {o.frames for o in out} == {3}
    assert len({pixels(o.body).tobytes() for o in out}) == 3
    with pytest.raises(InvalidRequest, match="frame 4 does not exist"):
        render(native, frame=3)


def test_a_thumbnail_fits_the_series_table(fr: CountryData) -> None:
    _, ds = first(fr, "MR")
    ds.PixelData = np.tile(ds.pixel_array, (3, 3)).tobytes()  # a 3x larger image
    ds.Rows, ds.Columns = ds.Rows * 3, ds.Columns * 3
    out = render(to_part10(ds), thumbnail=True)
    assert max(out.width, out.height) == THUMBNAIL


def test_what_cannot_be_rendered_is_refused_not_crashed(fr: CountryData) -> None:
    study, ds = first(fr, "CT")
    with pytest.raises(NotAcceptable):
        render(to_part10(build_manifest(study, encoding="MADO")))
    with pytest.raises(InvalidRequest, match="unknown window preset"):
        render(to_part10(ds), preset="<script>")
