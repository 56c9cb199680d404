"""multipart/related encode/decode (RFC 2046 5.1, RFC 2387): exact inverses, streaming, strict."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ncp.dicom.multipart import (
    DecodedPart,
    MultipartDecoder,
    Part,
    encode_multipart,
    encode_multipart_bytes,
    iter_parts,
    multipart_content_type,
    new_boundary,
)
from ncp.errors import InvalidRequest, PayloadTooLarge

BOUNDARY = "b0undary-x"
CONTENT_TYPE = multipart_content_type("application/dicom", BOUNDARY)
BODIES = [
    b"",
    b"x",
    b"\r\n",
    b"--b0undary-x is not a delimiter without CRLF before it",
    b"\r\n--b0undar",  # a delimiter prefix at the very end of a body
    os.urandom(10_000),
    b"\r\n\r\n" * 100,
]


def rechunk(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def decode_chunks(chunks: Iterable[bytes], content_type: str = CONTENT_TYPE) -> list[DecodedPart]:
    decoder = MultipartDecoder(content_type)
    parts = [p for chunk in chunks for p in decoder.feed(chunk)]
    decoder.close()
    return parts


async def collect(parts: list[Part], boundary: str = BOUNDARY) -> bytes:
    async def source() -> AsyncIterator[Part]:
        for part in parts:
            yield part

    return b"".join([chunk async for chunk in encode_multipart(source(), boundary)])


async def test_encode_then_decode_restores_bodies_and_headers(tmp_path: Path) -> None:
    big = tmp_path / "big.dcm"
    big.write_bytes(os.urandom(300_000))
    parts = [Part.from_bytes(b, "application/dicom", f"http://pacs/i/{i}") for i, b in enumerate(BODIES)]
    parts.append(
        Part.from_file(big, "application/dicom; transfer-syntax=1.2.840.10008.1.2.1", chunk_size=4096)
    )

    message = await collect(parts)
    decoded = decode_chunks([message])

    assert [p.body for p in decoded] == [*BODIES, big.read_bytes()]
    assert decoded[0].headers == {"content-type": "application/dicom", "content-location": "http://pacs/i/0"}
    assert decoded[-1].content_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"


@pytest.mark.parametrize("size", [1, 7, 4096, 65536])
def test_decoding_does_not_depend_on_chunk_boundaries(size: int) -> None:
    message = encode_multipart_bytes(BODIES, "application/dicom", BOUNDARY)

    assert [p.body for p in decode_chunks(rechunk(message, size))] == BODIES


def test_a_delimiter_split_at_every_possible_offset_is_still_found() -> None:
    message = encode_multipart_bytes([b"first", b"second"], "application/dicom", BOUNDARY)
    start = message.index(b"\r\n--" + BOUNDARY.encode())
    for cut in range(start - 2, start + len(BOUNDARY) + 8):
        parts = decode_chunks([message[:cut], message[cut:]])
        assert [p.body for p in parts] == [b"first", b"second"], cut


async def test_async_encoder_and_byte_encoder_frame_identically() -> None:
    streamed = await collect([Part.from_bytes(b, "application/dicom") for b in BODIES])

    assert streamed == encode_multipart_bytes(BODIES, "application/dicom", BOUNDARY)


def test_a_message_with_no_part_round_trips() -> None:
    message = encode_multipart_bytes([], "application/dicom", BOUNDARY)

    assert message == b"--b0undary-x--\r\n"
    assert decode_chunks([message]) == []


def test_parts_are_returned_as_soon_as_complete() -> None:
    message = encode_multipart_bytes([b"one", b"two"], "application/dicom", BOUNDARY)
    decoder = MultipartDecoder(CONTENT_TYPE)
    second_delimiter = message.index(b"\r\n--", message.index(b"one"))

    first = decoder.feed(message[: second_delimiter + 4 + len(BOUNDARY)])
    rest = decoder.feed(message[second_delimiter + 4 + len(BOUNDARY) :])

    assert [p.body for p in first] == [b"one"]
    assert [p.body for p in rest] == [b"two"]
    assert decoder.complete


@pytest.mark.parametrize(
    "content_type",
    [
        f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"',
        f"multipart/related; type=application/dicom; boundary={BOUNDARY}",
        f"Multipart/Related;Boundary={BOUNDARY};Type=application/dicom",
        f"multipart/related; boundary={BOUNDARY}",
    ],
)
def test_quoted_and_unquoted_parameters_are_equivalent(content_type: str) -> None:
    message = encode_multipart_bytes([b"a", b"b"], "application/dicom", BOUNDARY)

    assert [p.body for p in decode_chunks([message], content_type)] == [b"a", b"b"]


def test_a_boundary_with_specials_is_quoted_in_the_content_type() -> None:
    boundary = "simple boundary:1"
    content_type = multipart_content_type("application/dicom", boundary, "1.2.840.10008.1.2.1")
    message = encode_multipart_bytes([b"z"], "application/dicom", boundary)

    assert content_type == (
        'multipart/related; type="application/dicom"; boundary="simple boundary:1"; '
        "transfer-syntax=1.2.840.10008.1.2.1"
    )
    assert [p.body for p in decode_chunks([message], content_type)] == [b"z"]


def test_preamble_epilogue_padding_and_dicomweb_client_framing_are_accepted() -> None:
    # dicomweb-client starts with CRLF and ends without one; RFC 2046 allows a preamble,
    # transport padding after a delimiter and an epilogue.
    message = (
        b"this is a preamble\r\n--b0undary-x  \t\r\nContent-Type: application/dicom\r\n\r\nA"
        b"\r\n--b0undary-x\r\n\r\nB"
        b"\r\n--b0undary-x--"
    )

    parts = decode_chunks([message + b"\r\nepilogue --b0undary-x junk"])

    assert [p.body for p in parts] == [b"A", b"B"]
    assert parts[1].headers == {}


def test_folded_header_lines_are_unfolded() -> None:
    message = (
        b"--b0undary-x\r\nContent-Type: application/dicom;\r\n transfer-syntax=1.2\r\n\r\nA\r\n--b0undary-x--"
    )

    (part,) = decode_chunks([message])

    assert part.content_type == "application/dicom; transfer-syntax=1.2"


def test_every_truncation_of_a_message_is_an_error_never_a_short_list() -> None:
    message = encode_multipart_bytes([b"first", b"second", b""], "application/dicom", BOUNDARY)
    closing = len(message) - len(b"\r\n")  # the final CRLF after "--boundary--" is optional
    for cut in range(closing):
        decoder = MultipartDecoder(CONTENT_TYPE)
        decoder.feed(message[:cut])
        with pytest.raises(InvalidRequest, match="truncated"):
            decoder.close()


async def test_iter_parts_yields_complete_parts_then_fails_on_a_truncated_stream() -> None:
    message = encode_multipart_bytes([b"one", b"two"], "application/dicom", BOUNDARY)

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in rechunk(message[:-12], 5):
            yield chunk

    seen = []
    with pytest.raises(InvalidRequest, match="truncated"):
        async for part in iter_parts(chunks(), CONTENT_TYPE):
            seen.append(part.body)
    assert seen == [b"one"]


async def test_iter_parts_on_a_whole_stream() -> None:
    message = encode_multipart_bytes(BODIES, "application/dicom", BOUNDARY)

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in rechunk(message, 7):
            yield chunk

    assert [p.body async for p in iter_parts(chunks(), CONTENT_TYPE)] == BODIES


@pytest.mark.parametrize(
    "content_type",
    [
        "application/dicom",
        'multipart/related; type="application/dicom"',
        "multipart/related; boundary=",
        "nonsense",
    ],
)
def test_content_types_without_a_usable_boundary_are_refused(content_type: str) -> None:
    with pytest.raises(InvalidRequest):
        MultipartDecoder(content_type)


@pytest.mark.parametrize(
    "message",
    [
        b"--b0undary-xGARBAGE\r\n\r\nA\r\n--b0undary-x--",  # text glued to the boundary
        b"--b0undary-x\r\nno colon here\r\n\r\nA\r\n--b0undary-x--",  # malformed header line
        b"--b0undary-x\r\nContent-Type: a/b\r\n\r\nA\r\n--b0undary-xyz\r\n\r\nB\r\n--b0undary-x--",
    ],
)
def test_malformed_framing_is_an_invalid_request(message: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode_chunks([message])


def test_oversized_headers_are_refused() -> None:
    decoder = MultipartDecoder(CONTENT_TYPE)
    with pytest.raises(InvalidRequest, match="headers"):
        decoder.feed(b"--b0undary-x\r\nX-Long: " + b"a" * 20_000)


def test_a_part_over_the_bound_is_refused_before_it_is_complete() -> None:
    decoder = MultipartDecoder(CONTENT_TYPE, max_part_bytes=1000)
    decoder.feed(b"--b0undary-x\r\n\r\n")
    with pytest.raises(PayloadTooLarge):
        for chunk in rechunk(b"x" * 5000, 100):
            decoder.feed(chunk)


def test_memory_is_bounded_by_the_part_not_the_message() -> None:
    body = b"y" * 100_000
    message = encode_multipart_bytes([body] * 30, "application/dicom", BOUNDARY)
    decoder = MultipartDecoder(CONTENT_TYPE)
    high_water = 0
    for chunk in rechunk(message, 8192):
        decoder.feed(chunk)
        high_water = max(high_water, len(decoder._buf))
    decoder.close()

    assert high_water < len(body) + 8192 + 100
    assert decoder.parts_seen == 30


def test_new_boundaries_are_random_and_valid() -> None:
    boundaries = {new_boundary() for _ in range(100)}

    assert len(boundaries) == 100
    for b in list(boundaries)[:3]:
        assert decode_chunks([encode_multipart_bytes([b"q"], "a/b", b)], multipart_content_type("a/b", b))


@pytest.mark.parametrize("boundary", ["", "x" * 71, "ends with space ", "bad\r\n", 'quote"'])
async def test_invalid_boundaries_are_refused_by_the_encoder(boundary: str) -> None:
    with pytest.raises(ValueError, match="boundary"):
        await collect([Part.from_bytes(b"a", "application/dicom")], boundary)


async def test_header_injection_is_refused_by_the_encoder() -> None:
    with pytest.raises(ValueError, match="header"):
        await collect([Part.from_bytes(b"a", "application/dicom", "http://x/\r\nX-Evil: 1")])


@settings(max_examples=60, deadline=None)
@given(
    bodies=st.lists(st.binary(max_size=300), max_size=6),
    size=st.integers(min_value=1, max_value=64),
)
def test_round_trip_property(bodies: list[bytes], size: int) -> None:
    message = encode_multipart_bytes(bodies, "application/dicom", BOUNDARY)

    assert [p.body for p in decode_chunks(rechunk(message, size))] == bodies
