"""Transcoding on retrieve (PS3.18 8.7.3.5, 10.4): Explicit VR Little Endian by default, any syntax
a codec can produce on request, the stored bytes for ``transfer-syntax=*``, 406 + Warning only where
no codec exists."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pacs_corpus import CorpusFile, by_syntax, corpus, corpus_pacs
from pacs_harness import Pacs, decode
from pacs_samples import ct_dataset, part10, sample_study
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from ncp.dicom.multipart import DecodedPart, MultipartDecoder
from ncp.dicom.uids import deterministic_uid
from ncp.model import StudyRecord
from ncp.pacs import rad107
from ncp.pacs.transcode import transcode
from ncp.synth import synthesize, to_part10
from ncp.topology import builtin_topology

EVLE = "1.2.840.10008.1.2.1"
JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
JPEG_LS = "1.2.840.10008.1.2.4.80"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
J2K = "1.2.840.10008.1.2.4.91"
RLE = "1.2.840.10008.1.2.5"
MPEG2 = "1.2.840.10008.1.2.4.100"
DICOM = 'multipart/related; type="application/dicom"'


def dataset(body: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(body))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pacs, list[CorpusFile]]]:
    """One PACS holding pydicom's test files with pixel data, every transfer syntax family among them."""
    with corpus_pacs(tmp_path_factory.mktemp("pacs-corpus")) as running:
        yield running


def test_the_corpus_covers_every_transfer_syntax_family(served: tuple[Pacs, list[CorpusFile]]) -> None:
    _, stored = served
    families = {UID(f.transfer_syntax).name.split(" ")[0] for f in stored}

    assert {"Explicit", "Implicit", "JPEG", "JPEG-LS", "RLE"} <= families
    assert {J2K_LOSSLESS, J2K, JPEG_LS, RLE, JPEG_BASELINE} <= {f.transfer_syntax for f in stored}
    assert any(f.frames > 1 and UID(f.transfer_syntax).is_compressed for f in stored)
    assert len(stored) >= 40


@pytest.mark.parametrize("item", corpus(), ids=lambda f: f.name)
def test_every_instance_comes_back_in_explicit_vr_little_endian_with_the_same_pixels(
    served: tuple[Pacs, list[CorpusFile]], item: CorpusFile
) -> None:
    pacs, stored = served
    if item not in stored:
        pytest.fail(f"{item.name} was refused at STOW")

    response = pacs.get(item.path, accept=DICOM)

    assert response.status_code == 200, response.headers.get("warning")
    assert f"transfer-syntax={EVLE}" in response.headers["content-type"]
    (part,) = decode(response)
    assert part.content_type == f"application/dicom; transfer-syntax={EVLE}"
    served = dataset(part.body)
    assert served.file_meta.TransferSyntaxUID == EVLE
    assert served.SOPInstanceUID == item.sop
    assert np.array_equal(served.pixel_array, item.decoded())


@pytest.mark.parametrize("accept", [None, "*/*", "application/dicom", DICOM])
def test_a_jpeg_baseline_instance_asked_for_by_default_is_explicit_vr_little_endian(
    served: tuple[Pacs, list[CorpusFile]], accept: str | None
) -> None:
    pacs, _ = served
    jpeg = by_syntax(JPEG_BASELINE)

    response = pacs.get(jpeg.path, accept=accept)

    assert response.status_code == 200
    body = response.content if accept == "application/dicom" else decode(response)[0].body
    assert dataset(body).file_meta.TransferSyntaxUID == EVLE
    assert np.array_equal(dataset(body).pixel_array, jpeg.decoded())


def test_transfer_syntax_star_returns_the_stored_bytes(served: tuple[Pacs, list[CorpusFile]]) -> None:
    pacs, _ = served
    for ts in (JPEG_BASELINE, J2K, RLE):
        item = by_syntax(ts)
        response = pacs.get(item.path, accept=DICOM + "; transfer-syntax=*")

        (part,) = decode(response)
        assert part.body == item.data
        assert part.content_type == f"application/dicom; transfer-syntax={ts}"


@pytest.mark.parametrize("target", [RLE, JPEG_LS, J2K_LOSSLESS])
@pytest.mark.parametrize("source", [EVLE, JPEG_LS, RLE])
def test_lossless_targets_are_encoded_and_decode_to_the_original_pixels(
    served: tuple[Pacs, list[CorpusFile]], source: str, target: str
) -> None:
    pacs, _ = served
    item = next(f for f in corpus() if f.transfer_syntax == source and f.name.startswith("MR_small"))

    response = pacs.get(item.path, accept=f"{DICOM}; transfer-syntax={target}")

    assert response.status_code == 200, response.headers.get("warning")
    (part,) = decode(response)
    served = dataset(part.body)
    assert part.content_type == f"application/dicom; transfer-syntax={target}"
    assert served.file_meta.TransferSyntaxUID == target
    assert np.array_equal(served.pixel_array, item.decoded())


def test_a_lossy_target_is_produced_only_when_named(served: tuple[Pacs, list[CorpusFile]]) -> None:
    pacs, _ = served
    item = by_syntax(EVLE)

    response = pacs.get(item.path, accept=f"{DICOM}; transfer-syntax={J2K}")

    served = dataset(decode(response)[0].body)
    assert served.file_meta.TransferSyntaxUID == J2K
    assert served.pixel_array.shape == item.decoded().shape


def test_a_syntax_no_codec_can_write_is_406_with_a_warning_naming_it(
    served: tuple[Pacs, list[CorpusFile]],
) -> None:
    pacs, _ = served
    item = by_syntax(EVLE)

    response = pacs.get(item.path, accept=f"{DICOM}; transfer-syntax={JPEG_BASELINE}")

    assert response.status_code == 406
    assert response.headers["warning"].startswith("299 pacs ")
    assert JPEG_BASELINE in response.headers["warning"]


@pytest.mark.parametrize("refused", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"])
def test_syntaxes_the_web_shall_not_use_are_never_produced(
    served: tuple[Pacs, list[CorpusFile]], refused: str
) -> None:
    """PS3.18 8.7.3: Implicit VR and Big Endian shall not be used; we refuse Deflated at STOW too."""
    pacs, _ = served

    response = pacs.get(by_syntax(EVLE).path, accept=f"{DICOM}; transfer-syntax={refused}")

    assert response.status_code == 406
    assert refused in response.headers["warning"]


def mpeg2_instance() -> bytes:
    """An instance stored in a syntax this server has no decoder for (MPEG2 video)."""
    tag = "no-codec"
    ds = ct_dataset(deterministic_uid(tag), deterministic_uid(tag, "s"), deterministic_uid(tag, "i"))
    ds.file_meta.TransferSyntaxUID = UID(MPEG2)
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    ds["PixelData"].VR = "OB"
    return part10(ds)


def test_an_instance_without_a_decoder_is_406_by_default_and_served_as_stored_with_star(pacs: Pacs) -> None:
    data = mpeg2_instance()
    assert pacs.stow([data]).status_code == 200
    ds = dataset(data)
    path = f"/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"

    default = pacs.get(path, accept=DICOM)
    star = pacs.get(path, accept=DICOM + "; transfer-syntax=*")
    fallback = pacs.get(path, accept="*/*")

    assert default.status_code == 406
    assert EVLE in default.headers["warning"] and MPEG2 in default.headers["warning"]
    assert [p.body for p in decode(star)] == [data]
    assert [p.body for p in decode(fallback)] == [data]  # */* names no DICOM type: as stored


def test_a_study_in_several_syntaxes_streams_every_part_in_the_one_asked_for(pacs: Pacs) -> None:
    samples = sample_study("mixed-syntax", series=1, per_series=3)
    originals = [dataset(s.data) for s in samples]
    bodies = [samples[0].data]
    for ds, ts in zip(originals[1:], (RLE, JPEG_LS), strict=True):
        copy = dataset(part10(ds))
        copy.compress(ts, generate_instance_uid=False)
        bodies.append(part10(copy))
    assert pacs.stow(bodies).status_code == 200

    response = pacs.get(f"/studies/{samples[0].study}", accept=DICOM)

    assert response.status_code == 200
    assert response.headers["content-type"].endswith(f"transfer-syntax={EVLE}")
    served = {d.SOPInstanceUID: d for d in (dataset(p.body) for p in decode(response))}
    for original in originals:
        got = served[original.SOPInstanceUID]
        assert got.file_meta.TransferSyntaxUID == EVLE
        assert np.array_equal(got.pixel_array, original.pixel_array)


def test_the_synthetic_catalogue_round_trips_in_explicit_vr_little_endian(pacs: Pacs) -> None:
    topology = builtin_topology("default")
    country = next(iter(topology.countries))
    urls = {p.retrieve_location_uid: pacs.base for p in topology.country(country).pacs}
    data = synthesize(topology, country, retrieve_urls=urls)
    by_modality: dict[str, StudyRecord] = {}
    for study in data.studies:
        by_modality.setdefault(study.series[0].modality, study)
    for study in by_modality.values():
        originals = {d.SOPInstanceUID: d for d in data.instances(study)}
        assert pacs.stow([to_part10(d) for d in originals.values()]).status_code == 200

        served = [dataset(p.body) for p in decode(pacs.get(f"/studies/{study.study_instance_uid}"))]

        assert {d.SOPInstanceUID for d in served} == set(originals)
        for got in served:
            assert got.file_meta.TransferSyntaxUID == EVLE
            if "PixelData" in got:
                assert np.array_equal(got.pixel_array, originals[got.SOPInstanceUID].pixel_array)


def test_transcoding_leaves_the_stored_files_untouched(served: tuple[Pacs, list[CorpusFile]]) -> None:
    pacs, _ = served
    before = pacs.files()

    pacs.get(by_syntax(JPEG_BASELINE).path, accept=DICOM)

    assert pacs.files() == before


def test_a_study_is_transcoded_one_instance_at_a_time_as_it_streams(
    pacs: Pacs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first part leaves before the later instances are decoded; never two decoded at once."""
    samples = sample_study("one-at-a-time", series=1, per_series=6)
    bodies = []
    for s in samples:
        ds = dataset(s.data)
        ds.compress(RLE, generate_instance_uid=False)
        bodies.append(part10(ds))
    assert pacs.stow(bodies).status_code == 200
    lock, calls, active, peak = threading.Lock(), [0], [0], [0]

    def observed(path: Path, target: str) -> bytes:
        with lock:
            calls[0] += 1
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            time.sleep(0.2)  # a slow codec: later instances are still to come when the first part leaves
            return transcode(path, target)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(rad107, "transcode", observed)
    with pacs.http.stream("GET", pacs.base + f"/studies/{samples[0].study}", headers={"Accept": DICOM}) as r:
        decoder = MultipartDecoder(r.headers["content-type"])
        parts: list[DecodedPart] = []
        decoded_when_first_arrived = None
        for chunk in r.iter_bytes():
            parts += decoder.feed(chunk)
            if parts and decoded_when_first_arrived is None:
                decoded_when_first_arrived = calls[0]
        decoder.close()

    assert [dataset(p.body).file_meta.TransferSyntaxUID for p in parts] == [EVLE] * 6
    # A part is known complete when the next delimiter arrives, sent with the next part's headers.
    assert decoded_when_first_arrived is not None and decoded_when_first_arrived <= 3
    assert calls[0] == 6 and peak[0] == 1
