"""Accept parsing and negotiation for WADO-RS (PS3.18 8.7.3-8.7.5) and QIDO-RS."""

from __future__ import annotations

import inspect
import sys

import pytest

from ncp.dicom.media import (
    DicomRepresentation,
    MediaType,
    RenderedRepresentation,
    TransferSyntax,
    negotiate,
    negotiate_dicom,
    negotiate_rendered,
    parse_accept,
    parse_media_type,
    split_header_list,
)
from ncp.errors import InvalidRequest, NotAcceptable

EVLE = TransferSyntax.EXPLICIT_VR_LITTLE_ENDIAN.value
JPEG = TransferSyntax.JPEG_BASELINE_8BIT.value


def test_media_type_parameters_are_unquoted_and_names_lower_cased() -> None:
    media_type, params = parse_media_type('Multipart/Related; Type="application/dicom"; boundary="a;b\\"c"')

    assert media_type == "multipart/related"
    assert params == {"type": "application/dicom", "boundary": 'a;b"c'}


@pytest.mark.parametrize("value", ["", "dicom", "a/b/c", "a/b; novalue", 'a/b; x="open'])
def test_malformed_media_types_are_invalid_requests(value: str) -> None:
    with pytest.raises(InvalidRequest):
        parse_media_type(value)


def test_header_lists_split_on_commas_outside_quotes() -> None:
    assert split_header_list('a/b; x="1,2", c/d ,, e/f') == ['a/b; x="1,2"', "c/d", "e/f"]


def test_accept_is_ordered_by_q_then_specificity_then_position() -> None:
    ranges = parse_accept("*/*; q=0.1, image/*, image/png, text/plain; q=0, image/jpeg; q=0.9")

    assert [r.media_type for r in ranges] == ["image/png", "image/*", "image/jpeg", "*/*"]


def test_a_missing_accept_means_anything() -> None:
    assert [r.media_type for r in parse_accept(None)] == ["*/*"]
    assert [r.media_type for r in parse_accept("  ")] == ["*/*"]


@pytest.mark.parametrize("accept", ["a/b; q=high", "a/b; q=2", "a/b; q=-1"])
def test_bad_q_values_are_invalid_requests(accept: str) -> None:
    with pytest.raises(InvalidRequest, match="q value"):
        parse_accept(accept)


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="application/dicom"',
        "multipart/related; type=application/dicom",
        "multipart/related;type=Application/DICOM",
        f"multipart/related; type=application/dicom; transfer-syntax={EVLE}",
        f'multipart/related; type="application/dicom"; transfer-syntax="{EVLE}"',
        "multipart/related",  # type missing: read as application/dicom
        None,
    ],
)
def test_dicom_multipart_in_the_default_syntax(accept: str | None) -> None:
    assert negotiate_dicom(accept, {EVLE}) == DicomRepresentation(multipart=True, transfer_syntax=EVLE)


def test_transfer_syntax_star_serves_what_is_stored() -> None:
    accept = 'multipart/related; type="application/dicom"; transfer-syntax=*'

    assert negotiate_dicom(accept, {JPEG}) == DicomRepresentation(True, JPEG)
    assert negotiate_dicom(accept, {JPEG, EVLE}) == DicomRepresentation(True, None)


def test_any_media_type_lets_the_server_choose_the_syntax() -> None:
    assert negotiate_dicom("*/*", {JPEG}) == DicomRepresentation(True, JPEG)


def test_stored_syntax_can_be_asked_for_by_name() -> None:
    accept = f"multipart/related; type=application/dicom; transfer-syntax={JPEG}"

    assert negotiate_dicom(accept, {JPEG}) == DicomRepresentation(True, JPEG)


def test_default_syntax_is_not_acceptable_for_compressed_files_without_transcoding() -> None:
    with pytest.raises(NotAcceptable, match=JPEG):
        negotiate_dicom('multipart/related; type="application/dicom"', {JPEG})


def test_a_later_range_is_used_when_the_preferred_one_cannot_be_served() -> None:
    accept = f"multipart/related; type=application/dicom; transfer-syntax={JPEG}, multipart/related; q=0.5"

    assert negotiate_dicom(accept, {EVLE}) == DicomRepresentation(True, EVLE)


@pytest.mark.parametrize(
    "accept",
    [
        'multipart/related; type="application/octet-stream"',
        'multipart/related; type="image/jpeg"',
        "application/dicom+json",
        "text/html",
        f"multipart/related; type=application/dicom; transfer-syntax={JPEG}",
        'multipart/related; type="application/dicom"; q=0',
    ],
)
def test_other_ranges_are_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable):
        negotiate_dicom(accept, {EVLE})


def test_single_part_application_dicom_only_where_allowed() -> None:
    assert negotiate_dicom("application/dicom", {EVLE}, single_part=True) == DicomRepresentation(False, EVLE)
    with pytest.raises(NotAcceptable):
        negotiate_dicom("application/dicom", {EVLE}, single_part=False)


def test_a_malformed_transfer_syntax_uid_is_a_bad_request() -> None:
    with pytest.raises(InvalidRequest, match="transfer-syntax"):
        negotiate_dicom("multipart/related; type=application/dicom; transfer-syntax=1.2.840.x", {EVLE})


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, MediaType.DICOM_JSON),
        ("application/dicom+json", MediaType.DICOM_JSON),
        ("application/json", MediaType.JSON),
        ("application/*", MediaType.DICOM_JSON),
        ("application/dicom+json; q=0.2, application/json", MediaType.JSON),
        ("*/*, application/dicom+json; q=0", MediaType.JSON),
    ],
)
def test_metadata_negotiation(accept: str | None, expected: MediaType) -> None:
    assert negotiate(accept, [MediaType.DICOM_JSON, MediaType.JSON]) == expected


def test_metadata_in_xml_is_not_acceptable() -> None:
    with pytest.raises(NotAcceptable):
        negotiate('multipart/related; type="application/dicom+xml"', [MediaType.DICOM_JSON, MediaType.JSON])


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, RenderedRepresentation(MediaType.JPEG, False)),
        ("image/png", RenderedRepresentation(MediaType.PNG, False)),
        ("image/*", RenderedRepresentation(MediaType.JPEG, False)),
        ("image/jpeg; q=0.3, image/png", RenderedRepresentation(MediaType.PNG, False)),
        ("image/jpeg; q=0, */*", RenderedRepresentation(MediaType.PNG, False)),
        ("multipart/related; type=image/jpeg", RenderedRepresentation(MediaType.JPEG, True)),
        ('multipart/related; type="image/png"', RenderedRepresentation(MediaType.PNG, True)),
    ],
)
def test_rendered_negotiation(accept: str | None, expected: RenderedRepresentation) -> None:
    assert negotiate_rendered(accept) == expected


@pytest.mark.parametrize("accept", ["image/gif", "text/html", "multipart/related; type=application/dicom"])
def test_rendered_media_types_we_do_not_make_are_not_acceptable(accept: str) -> None:
    with pytest.raises(NotAcceptable):
        negotiate_rendered(accept)


def test_enum_members_are_documented() -> None:
    for enum in (MediaType, TransferSyntax):
        source = inspect.getsource(sys.modules[enum.__module__])
        for member in enum:
            assert f'{member.name} = "{member.value}"\n    """' in source, member
