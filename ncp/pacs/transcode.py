"""Transcoding on retrieve (PS3.18 8.7.3.5, 10.4.1): a stored instance in another transfer syntax.

PS3.18 makes Explicit VR Little Endian the default representation of ``application/dicom``, so a
compressed instance asked for without a ``transfer-syntax`` parameter is decoded; an explicit
parameter is honoured wherever pydicom has a decoder for the stored syntax and, for a compressed
target, an encoder (RLE, JPEG-LS, JPEG 2000 with the pylibjpeg / pyjpegls plugins). Implicit VR,
Big Endian and Deflated are never produced: they shall not be used on the Web (PS3.18 8.7.3), and
STOW stores them converted to Explicit VR Little Endian (docs/decisions.md). One instance is
decoded at a time, in the caller's worker thread.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pydicom
from pydicom.pixels.decoders.base import get_decoder
from pydicom.pixels.encoders.base import get_encoder
from pydicom.uid import UID

from ncp.dicom.media import TransferSyntax
from ncp.errors import NotAcceptable

__all__ = ["can_decode", "can_produce", "transcode"]

_NEVER_PRODUCED = frozenset(
    {
        TransferSyntax.IMPLICIT_VR_LITTLE_ENDIAN.value,
        TransferSyntax.EXPLICIT_VR_BIG_ENDIAN.value,
        TransferSyntax.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN.value,
    }
)

# Lossy targets are produced only when named explicitly; these keep them close to the original.
_LOSSY_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    TransferSyntax.JPEG_LS_NEAR_LOSSLESS.value: {"jls_error": 2},
    TransferSyntax.JPEG_2000.value: {"j2k_cr": [10]},
}


def can_decode(transfer_syntax: str) -> bool:
    """Whether pixel data stored in ``transfer_syntax`` can be decoded here (installed plugins)."""
    uid = UID(transfer_syntax)
    if not uid.is_transfer_syntax:
        return False
    try:
        return bool(get_decoder(uid).is_available)
    except NotImplementedError:
        return False


def _can_encode(transfer_syntax: str) -> bool:
    uid = UID(transfer_syntax)
    if transfer_syntax in _NEVER_PRODUCED or not uid.is_transfer_syntax:
        return False
    if not uid.is_compressed:
        return True
    try:
        return bool(get_encoder(uid).is_available)
    except NotImplementedError:
        return False


def can_produce(stored: str, target: str, *, has_pixels: bool = True) -> bool:
    """Whether an instance stored in ``stored`` can be served in ``target``.

    Without pixel data only the dataset encoding matters, which every producible syntax shares.
    """
    if stored == target:
        return True
    if not _can_encode(target):
        return False
    return not has_pixels or can_decode(stored)


def transcode(path: Path, target: str) -> bytes:
    """The PS3.10 file at ``path`` re-encoded in ``target`` (which :func:`can_produce` accepted).

    Decoding follows pydicom's defaults, as a viewer's own decode would: YCbCr JPEG becomes RGB
    (PS3.5 8.2.1). SOP Instance UIDs are kept: the part's Content-Location names the instance.
    """
    uid = UID(target)
    try:
        ds = pydicom.dcmread(path)
        if "PixelData" in ds and ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.decompress(generate_instance_uid=False)
        if "PixelData" in ds and uid.is_compressed:
            ds.compress(uid, generate_instance_uid=False, **_LOSSY_DEFAULTS.get(target, {}))
    except Exception as exc:  # codecs raise many types on data they do not support; never a 500
        raise NotAcceptable(
            f"instance {path.stem} cannot be transcoded to transfer syntax {target}: "
            f"{type(exc).__name__}: {exc}"
        ) from None
    ds.file_meta.TransferSyntaxUID = uid
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
