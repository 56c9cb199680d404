"""Rendered resources (PS3.18 10.4.1.1.3): JPEG by default, PNG on request, windowed to 8 bits."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pydicom
import pytest
from pacs_corpus import CorpusFile, corpus, corpus_pacs
from pacs_harness import Pacs
from pacs_samples import Sample, ct_dataset, part10
from PIL import Image
from pydicom.pixels import apply_color_lut

from ncp.dicom.multipart import MultipartDecoder
from ncp.dicom.uids import deterministic_uid


def instance_path(s: Sample) -> str:
    return f"/studies/{s.study}/series/{s.series}/instances/{s.sop}"


def image(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_instance_renders_as_jpeg_by_default(shared: Pacs, study: list[Sample]) -> None:
    response = shared.get(instance_path(study[0]) + "/rendered", accept=None)

    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
    img = image(response.content)
    assert img.format == "JPEG" and img.size == (64, 64) and img.mode == "L"


def test_png_on_request_is_the_exact_window_of_the_pixels(shared: Pacs, study: list[Sample]) -> None:
    response = shared.get(instance_path(study[0]) + "/rendered", accept="image/png")
    img = image(response.content)
    ds = pydicom.dcmread(io.BytesIO(study[0].data))
    hu = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    # PS3.3 C.11.2.1.2.1, the linear VOI function
    expected = np.round(np.clip((hu - (center - 0.5)) / (width - 1) + 0.5, 0, 1) * 255).astype(np.uint8)

    assert response.headers["content-type"] == "image/png"
    assert img.format == "PNG"
    assert np.array_equal(np.asarray(img), expected)
    assert expected.min() == 0 and expected.max() == 255  # the window clips both ends of this ramp


def test_the_window_parameter_changes_the_image(shared: Pacs, study: list[Sample]) -> None:
    path = instance_path(study[0]) + "/rendered"
    default = np.asarray(image(shared.get(path, accept="image/png").content))
    wide = np.asarray(image(shared.get(path, accept="image/png", window="0,4000,linear").content))

    assert not np.array_equal(default, wide)
    assert wide.min() > 0 and wide.max() < 255  # the whole range fits in a 4000-wide window


def test_viewport_scales_to_fit(shared: Pacs, study: list[Sample]) -> None:
    response = shared.get(instance_path(study[0]) + "/rendered", accept="image/png", viewport="32,16")

    assert image(response.content).size == (16, 16)


@pytest.mark.parametrize("level", ["study", "series"])
def test_series_and_study_render_their_first_image(shared: Pacs, study: list[Sample], level: str) -> None:
    first = study[0]
    path = f"/studies/{first.study}" + (f"/series/{first.series}" if level == "series" else "")
    rendered = shared.get(path + "/rendered", accept="image/png").content
    direct = shared.get(instance_path(first) + "/rendered", accept="image/png").content

    assert rendered == direct


def test_multipart_wrapped_rendering_as_in_mado_examples(shared: Pacs, study: list[Sample]) -> None:
    response = shared.get(instance_path(study[0]) + "/rendered", accept="multipart/related; type=image/jpeg")
    decoder = MultipartDecoder(response.headers["content-type"])
    (part,) = decoder.feed(response.content)
    decoder.close()

    assert response.status_code == 200
    assert part.content_type == "image/jpeg"
    assert image(part.body).size == (64, 64)


@pytest.mark.parametrize(
    "params",
    [{"quality": "0"}, {"quality": "high"}, {"window": "40"}, {"window": "40,0"}, {"viewport": "0,10"}],
)
def test_bad_rendering_parameters_are_400(shared: Pacs, study: list[Sample], params: dict[str, str]) -> None:
    response = shared.get(instance_path(study[0]) + "/rendered", accept=None, **params)

    assert response.status_code == 400
    assert response.headers["warning"].startswith("299 pacs ")


def test_media_types_we_do_not_render_are_406(shared: Pacs, study: list[Sample]) -> None:
    response = shared.get(instance_path(study[0]) + "/rendered", accept="image/gif")

    assert response.status_code == 406


def test_an_instance_without_pixels_is_not_renderable(pacs: Pacs) -> None:
    ds = ct_dataset(deterministic_uid("np"), deterministic_uid("np-s"), deterministic_uid("np-i"))
    del ds.PixelData
    pacs.stow([part10(ds)])

    instance = pacs.get(
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    )
    rendered = pacs.get(
        f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/rendered",
        accept=None,
    )
    study = pacs.get(f"/studies/{ds.StudyInstanceUID}/rendered", accept=None)

    assert instance.status_code == 200
    assert rendered.status_code == 406
    assert study.status_code == 404


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pacs, list[CorpusFile]]]:
    """pydicom's test files with pixel data, every transfer syntax family among them."""
    with corpus_pacs(tmp_path_factory.mktemp("pacs-rendered")) as running:
        yield running


def one_per_syntax() -> list[CorpusFile]:
    return list({f.transfer_syntax: f for f in corpus()}.values())


@pytest.mark.parametrize("item", one_per_syntax(), ids=lambda f: f"{f.transfer_syntax}-{f.name}")
def test_every_decodable_transfer_syntax_renders(
    served: tuple[Pacs, list[CorpusFile]], item: CorpusFile
) -> None:
    pacs, _ = served
    ds = pydicom.dcmread(io.BytesIO(item.data), stop_before_pixels=True)

    response = pacs.get(item.path + "/rendered", accept="image/png")

    assert response.status_code == 200, response.headers.get("warning")
    assert image(response.content).size == (ds.Columns, ds.Rows)


def test_palette_color_is_rendered_through_its_lookup_tables(served: tuple[Pacs, list[CorpusFile]]) -> None:
    pacs, _ = served
    palette = next(f for f in corpus() if f.name == "examples_palette.dcm")
    ds = pydicom.dcmread(io.BytesIO(palette.data))
    expected = (apply_color_lut(ds.pixel_array, ds) >> 8).astype(np.uint8)  # 16-bit entries: high byte

    response = pacs.get(palette.path + "/rendered", accept="image/png")

    img = image(response.content)
    assert ds.PhotometricInterpretation == "PALETTE COLOR"
    assert img.mode == "RGB"
    assert np.array_equal(np.asarray(img), expected)
    assert len(np.unique(expected.reshape(-1, 3), axis=0)) > 2  # a colour image, not a grey one


def test_ycbcr_jpeg_renders_as_the_rgb_it_decodes_to(served: tuple[Pacs, list[CorpusFile]]) -> None:
    pacs, _ = served
    ybr = next(f for f in corpus() if f.name == "SC_rgb_dcmtk_+eb+cy+np.dcm")
    decoded = pydicom.dcmread(io.BytesIO(ybr.data)).pixel_array

    img = image(pacs.get(ybr.path + "/rendered", accept="image/png").content)

    assert img.mode == "RGB"
    assert np.array_equal(np.asarray(img), decoded)


def test_a_multiframe_image_renders_its_first_frame(served: tuple[Pacs, list[CorpusFile]]) -> None:
    pacs, _ = served
    multi = next(f for f in corpus() if f.frames > 1 and f.name.startswith("SC_rgb_rle_2frame"))
    first = pydicom.dcmread(io.BytesIO(multi.data)).pixel_array[0]

    img = image(pacs.get(multi.path + "/rendered", accept="image/png").content)

    assert np.array_equal(np.asarray(img), first)
