"""A structural pre-check of PS3.10 files, run before pydicom parses untrusted bytes.

pydicom silently accepts a value whose declared length runs past the end of the file (it keeps
the short read) and recurses once per nested undefined-length sequence. This scanner walks
the encoding (PS3.5 7.1, 7.5; file meta little endian, the dataset little or big endian, 7.3)
iteratively, without building values, and refuses: an element, item or fragment whose declared
length exceeds its container, sequences nested deeper than ``max_depth``, unbalanced delimiters,
and more than ``max_elements`` elements.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR

__all__ = ["StructureError", "check_structure"]

_UNDEFINED = 0xFFFFFFFF
_ITEM, _ITEM_END, _SEQ_END = 0xE000, 0xE00D, 0xE0DD
# PS3.5 Table 7.1-1: VRs with a reserved field and a 32-bit length.
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_BIG = (struct.Struct(">HH"), struct.Struct(">H"), struct.Struct(">I"))


class StructureError(ValueError):
    """The bytes are not a well-formed PS3.10 encoding (message says where and why)."""


@dataclass
class _Container:
    end: int | None  # absolute end offset, or None when closed by a delimiter
    kind: str  # "seq" (holds items), "item" (holds elements), "frags" (encapsulated pixel data)
    implicit: bool = False  # contents in Implicit VR (inside an undefined-length UN, PS3.5 6.2.2)


def _is_sequence(tag: int) -> bool:
    try:
        return str(dictionary_VR(tag)) == "SQ"
    except KeyError:
        return False


class _Scanner:
    def __init__(
        self, data: bytes, explicit: bool, max_depth: int, max_elements: int, little_endian: bool = True
    ) -> None:
        self.data = data
        self.big_endian = not little_endian
        self.explicit_dataset = explicit
        self.max_depth = max_depth
        self.max_elements = max_elements
        self.stack: list[_Container] = []
        self.elements = 0
        self.in_meta = True

    def fail(self, pos: int, why: str) -> StructureError:
        return StructureError(f"offset {pos}: {why}")

    def limit(self) -> int:
        for c in reversed(self.stack):
            if c.end is not None:
                return c.end
        return len(self.data)

    def depth(self) -> int:
        return sum(1 for c in self.stack if c.kind == "seq")

    def run(self, pos: int) -> None:
        while True:
            top = self.stack[-1] if self.stack else None
            if pos == self.limit():
                if top is None:
                    return
                if top.end is None:
                    raise self.fail(pos, "undefined-length sequence or item not closed by a delimiter")
                self.stack.pop()
                continue
            if pos + 8 > self.limit():
                raise self.fail(pos, "truncated element header")
            pos = self.step(pos, top)

    def step(self, pos: int, top: _Container | None) -> int:
        self.elements += 1
        if self.elements > self.max_elements:
            raise self.fail(pos, f"more than {self.max_elements} data elements")
        group, elem = _TAG.unpack_from(self.data, pos)
        if self.big_endian and not (self.in_meta and group == 0x0002) and not (top and top.implicit):
            return self.step_big(pos, top)
        if group == 0xFFFE:
            return self.delimiter(pos, elem, top)
        if top is not None and top.kind != "item":
            raise self.fail(pos, "data element directly inside a sequence (item expected)")
        if self.in_meta and group != 0x0002 and not self.stack:
            self.in_meta = False
        if self.in_meta or (self.explicit_dataset and not (top and top.implicit)):
            vr = bytes(self.data[pos + 4 : pos + 6])
            if vr in _LONG_VRS:
                if pos + 12 > self.limit():
                    raise self.fail(pos, "truncated element header")
                (length,), start = _U32.unpack_from(self.data, pos + 8), pos + 12
            else:
                (length,), start = _U16.unpack_from(self.data, pos + 6), pos + 8
        else:
            vr = b"SQ" if _is_sequence((group << 16) | elem) else b""
            (length,), start = _U32.unpack_from(self.data, pos + 4), pos + 8
        return self.value(pos, start, length, vr, (group, elem))

    def step_big(self, pos: int, top: _Container | None) -> int:
        """One element of an Explicit VR Big Endian dataset (PS3.5 7.3): same layout, other byte order."""
        self.in_meta = False
        tag, u16, u32 = _BIG
        group, elem = tag.unpack_from(self.data, pos)
        if group == 0xFFFE:
            return self.delimiter(pos, elem, top, u32)
        if top is not None and top.kind != "item":
            raise self.fail(pos, "data element directly inside a sequence (item expected)")
        vr = bytes(self.data[pos + 4 : pos + 6])
        if vr in _LONG_VRS:
            if pos + 12 > self.limit():
                raise self.fail(pos, "truncated element header")
            (length,), start = u32.unpack_from(self.data, pos + 8), pos + 12
        else:
            (length,), start = u16.unpack_from(self.data, pos + 6), pos + 8
        return self.value(pos, start, length, vr, (group, elem))

    def value(self, pos: int, start: int, length: int, vr: bytes, tag: tuple[int, int]) -> int:
        implicit = bool(self.stack and self.stack[-1].implicit) or not (self.explicit_dataset or self.in_meta)
        if length == _UNDEFINED:
            if vr in (b"SQ", b"UN") or implicit:
                return self.open(pos, start, None, "seq", implicit or vr == b"UN")
            if tag == (0x7FE0, 0x0010):
                return self.open(pos, start, None, "frags")
            raise self.fail(
                pos, f"undefined length not allowed for ({tag[0]:04X},{tag[1]:04X}) {vr.decode()!r}"
            )
        if start + length > self.limit():
            raise self.fail(pos, f"({tag[0]:04X},{tag[1]:04X}) declares {length} bytes beyond its container")
        if vr == b"SQ":
            return self.open(pos, start, start + length, "seq", implicit)
        return start + length

    def open(self, pos: int, start: int, end: int | None, kind: str, implicit: bool = False) -> int:
        self.stack.append(_Container(end, kind, implicit))
        if self.depth() > self.max_depth:
            raise self.fail(pos, f"sequences nested deeper than {self.max_depth} levels")
        return start

    def delimiter(self, pos: int, elem: int, top: _Container | None, u32: struct.Struct = _U32) -> int:
        length: int = u32.unpack_from(self.data, pos + 4)[0]
        start = pos + 8
        if elem == _ITEM and top is not None and top.kind == "frags":
            if length == _UNDEFINED or start + length > self.limit():
                raise self.fail(pos, "pixel data fragment length exceeds its container")
            return start + length
        if elem == _ITEM and top is not None and top.kind == "seq":
            end = None if length == _UNDEFINED else start + length
            if end is not None and end > self.limit():
                raise self.fail(pos, "sequence item declares a length beyond its container")
            self.stack.append(_Container(end, "item", top.implicit))
            return start
        closes = {_ITEM_END: ("item",), _SEQ_END: ("seq", "frags")}.get(elem)
        if closes is None or top is None or top.end is not None or top.kind not in closes:
            raise self.fail(pos, f"unexpected item or delimiter tag (FFFE,{elem:04X})")
        self.stack.pop()
        return start


def check_structure(
    data: bytes,
    *,
    explicit_vr: bool,
    max_depth: int = 12,
    max_elements: int = 1_000_000,
    little_endian: bool = True,
) -> None:
    """Raise StructureError unless ``data`` (a whole PS3.10 file) is structurally sound."""
    if len(data) < 132 or data[128:132] != b"DICM":
        raise StructureError("no PS3.10 preamble and DICM prefix")
    _Scanner(data, explicit_vr, max_depth, max_elements, little_endian).run(132)
