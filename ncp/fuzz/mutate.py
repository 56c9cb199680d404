"""Hostile variants of valid requests, drawn from a seeded ``random.Random``: same seed, same requests.

A :class:`Draft` is a template opened up for editing (path segments as sent on the wire, query pairs,
raw header bytes, the structured body). Each mutator edits one aspect and returns a short note
saying what it did; :func:`mutate` applies one to three of them (STOW-RS bodies are always garbled
first: no mutated STOW may be storable). :meth:`Draft.render` gives the bytes to send.
"""

from __future__ import annotations

import copy
import json
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from ncp.dicom.multipart import encode_multipart_bytes
from ncp.fuzz.corpus import BOUNDARY, Template
from ncp.fuzz.wire import RawRequest

__all__ = ["Draft", "Palette", "mutate", "unmutated"]

_SAFE = ":|,"

UNICODE = ["é", "ü", "\u202e", "\u200b", "𝔘", "１２", "Ⅻ", "ﬁ", "\ufeff", "中文", "\U0001f600", "\ud800"]
SPECIAL = list(",|$\\;*?'\"<>{}[]%+ ~@:#&=^`!()")
WORDS = [
    "", "..", ".", "null", "NaN", "-1", "0", "1e309", "9" * 30, "true", "[]", "{}", "${jndi:ldap://x/a}",
    "../../../../etc/passwd", "%00", "%2e%2e", "%2f", "%5c", "%ff", "%c0%ae", "%zz", "%", "urn:oid:",
    "urn:oid:1.2|", "|x", "a|b|c", "1.2.840..1", "01.2", "1.2.", ".1.2", "2.25." + "9" * 80, "1.2,1.3",
    "1.2\\1.3", "[127.0.0.1]", "http://[::1]/", "http://user@127.0.0.1/", "file:///etc/passwd",
    "<script>alert(1)</script>", "' OR '1'='1", '"; DROP TABLE x; --', "*?*", "$everything", "a" * 65,
]  # fmt: skip


@dataclass(frozen=True)
class Palette:
    """What some mutators borrow from the federation: other patients, other UIDs, allowlisted bases."""

    patients: tuple[str, ...]
    study_uids: tuple[str, ...]
    pacs_urls: tuple[str, ...]


@dataclass
class Draft:
    family: str
    listener: str
    method: str
    segments: list[str]
    query: list[tuple[str, str]]
    headers: list[tuple[bytes, bytes]]
    auth: str
    json: Any = None
    form: list[tuple[str, str]] | None = None
    parts: list[bytes] | None = None
    raw_query: str = ""  # appended verbatim after the encoded query
    body: bytes | None = None  # replaces whatever the structured body renders to
    notes: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, t: Template, host: str) -> Draft:
        headers = [(b"Host", host.encode()), *((k.encode(), v.encode()) for k, v in t.headers)]
        return cls(
            t.family, t.listener, t.method, list(t.path), list(t.query), headers, t.auth,
            copy.deepcopy(t.json), None if t.form is None else list(t.form),
            None if t.parts is None else list(t.parts),
        )  # fmt: skip

    def target(self) -> str:
        query = "&".join(f"{_quote(k, _SAFE)}={_quote(v, _SAFE)}" for k, v in self.query)
        query += self.raw_query
        return "/" + "/".join(self.segments) + (f"?{query}" if query else "")

    def render_body(self) -> bytes:
        if self.body is not None:
            return self.body
        if self.json is not None:
            return json.dumps(self.json).encode("utf-8", "surrogatepass")
        if self.form is not None:
            return urlencode(self.form, errors="surrogatepass").encode()
        if self.parts is not None:
            return encode_multipart_bytes(self.parts, "application/dicom", BOUNDARY)
        return b""

    def render(self) -> RawRequest:
        target = self.target().encode("utf-8", "surrogatepass")
        return RawRequest(self.method.encode(), target, tuple(self.headers), self.render_body())

    def set_header(self, name: bytes, value: bytes) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()] + [(name, value)]


def _quote(text: str, safe: str) -> str:
    return quote(text, safe=safe, errors="surrogatepass")


Mutator = Callable[[random.Random, Draft, Palette], str]


# -- hostile values ----------------------------------------------------------------------------------
def overlong(rng: random.Random) -> str:
    return rng.choice(["A", "9", ".", "%", "é", "|"]) * rng.choice([256, 2048, 9000, 70000])


def nasty(rng: random.Random, original: str = "") -> str:
    roll = rng.random()
    if roll < 0.3:
        return rng.choice(WORDS)
    if roll < 0.45:
        return "".join(rng.choice(SPECIAL) for _ in range(rng.randint(1, 4)))
    if roll < 0.6:
        return rng.choice(UNICODE) + (original if rng.random() < 0.5 else "")
    if roll < 0.7:
        return overlong(rng)
    at = rng.randint(0, len(original))
    return original[:at] + rng.choice(SPECIAL + UNICODE + WORDS) + original[at:]


def wire(rng: random.Random, text: str) -> str:
    """``text`` as it goes into a URL: mostly percent-encoded, sometimes raw (the parser may refuse)."""
    roll = rng.random()
    if roll < 0.15:
        return text
    if roll < 0.3:
        return "".join(f"%{b:02X}" for b in text.encode("utf-8", "surrogatepass"))
    return _quote(text, "" if roll < 0.65 else "%.,|$")


# -- path --------------------------------------------------------------------------------------------
DOT_SEGMENTS = ["..", ".", "%2e%2e", "%2E", ".%2e", "%2e.", "..%2f..", "..;", "%252e%252e", "..\\.."]


def dot_segment(rng: random.Random, d: Draft, p: Palette) -> str:
    seg = rng.choice(DOT_SEGMENTS)
    d.segments.insert(rng.randint(0, len(d.segments)), seg)
    return f"path: dot segment {seg!r}"


def replace_segment(rng: random.Random, d: Draft, p: Palette) -> str:
    i = rng.randrange(len(d.segments))
    d.segments[i] = wire(rng, nasty(rng, d.segments[i]))
    return f"path: segment {i} replaced"


def encode_segment(rng: random.Random, d: Draft, p: Palette) -> str:
    """Percent-encoding of unreserved characters: the same resource, spelt differently."""
    i = rng.randrange(len(d.segments))
    d.segments[i] = "".join(f"%{b:02x}" for b in d.segments[i].encode())
    return f"path: segment {i} percent-encoded"


def overlong_segment(rng: random.Random, d: Draft, p: Palette) -> str:
    i = rng.randrange(len(d.segments))
    d.segments[i] = _quote(overlong(rng), "")
    return f"path: segment {i} overlong"


def reshape_path(rng: random.Random, d: Draft, p: Palette) -> str:
    i = rng.randrange(len(d.segments))
    how = rng.choice(["drop", "duplicate", "empty", "trailing", "upper", "swap"])
    if how == "drop" and len(d.segments) > 1:
        del d.segments[i]
    elif how == "duplicate":
        d.segments.insert(i, d.segments[i])
    elif how == "empty":
        d.segments.insert(i, "")
    elif how == "trailing":
        d.segments.append("")
    elif how == "upper":
        d.segments[i] = d.segments[i].upper()
    elif i + 1 < len(d.segments):
        d.segments[i], d.segments[i + 1] = d.segments[i + 1], d.segments[i]
    return f"path: {how} at {i}"


_FULLWIDTH = str.maketrans("0123456789.", "０１２３４５６７８９．")


def dotted_id(rng: random.Random, d: Draft, p: Palette) -> str:
    """A dotted identifier (UID, OID, ``FR.national.<id>``) spelt wrongly: dot games, lists, look-alikes."""
    dotted = [i for i, s in enumerate(d.segments) if "." in s.strip(".")]
    if not dotted:
        return replace_segment(rng, d, p)
    i = rng.choice(dotted)
    uid = d.segments[i]
    head = uid.split(".")[0]
    variants = [
        uid + ".", "." + uid, uid.replace(".", ".0", 1), uid + "." + "1" * (65 - len(uid)), f"+{uid}",
        _quote(f" {uid}", ""), uid + "%2C" + uid, uid + "%5C" + uid, _quote(uid.translate(_FULLWIDTH), ""),
        rng.choice(p.study_uids), "1.2.3.4.5.6.7.8.9", uid.replace(".", ".."), uid[: len(uid) // 2],
        f"{head}..", f"{head}...", f"{head}.%2e%2e", uid.rsplit(".", 1)[0] + "..",
        f"{head}..{uid[len(head) + 1 :]}",
    ]  # fmt: skip
    d.segments[i] = rng.choice(variants)
    return f"path: dotted {i} -> {d.segments[i][:40]!r}"


# -- query -------------------------------------------------------------------------------------------
CONTROL_PARAMS = [
    "_count", "_offset", "_format", "_sort", "_include", "_summary", "_elements", "_id", "limit", "offset",
    "includefield", "fuzzymatching", "retrieveURL", "retrieveurl", "patient", "status", "identifier",
]  # fmt: skip
CONTROL_VALUES = ["-1", "0", "1e9", "abc", "99999999999999999999", "", "xml", "*", "true", "1.5", "0x10"]
RAW_QUERY = ["&", "&&", "=", "==", "&=x", "%", "%zz", "&a=%ff", "&a=%00", ";", "?", "+", "&a[]=1", "%26"]


def query_value(rng: random.Random, d: Draft, p: Palette) -> str:
    if not d.query:
        return query_unknown(rng, d, p)
    i = rng.randrange(len(d.query))
    key, value = d.query[i]
    d.query[i] = (key, nasty(rng, value))
    return f"query: {key} value"


def query_unknown(rng: random.Random, d: Draft, p: Palette) -> str:
    key = rng.choice([*CONTROL_PARAMS, nasty(rng), "x"])
    d.query.append((key, rng.choice([*CONTROL_VALUES, nasty(rng)])))
    return f"query: + {key[:30]!r}"


def query_reshape(rng: random.Random, d: Draft, p: Palette) -> str:
    how = rng.choice(["drop", "duplicate", "raw", "many", "alternatives"])
    if how == "drop" and d.query:
        del d.query[rng.randrange(len(d.query))]
    elif how == "duplicate" and d.query:
        d.query.append(rng.choice(d.query))
    elif how == "many":
        d.query += [(rng.choice(["x", "status", "_count", "modality"]), "1")] * rng.choice([60, 300, 2000])
    elif how == "alternatives" and d.query:
        i = rng.randrange(len(d.query))
        d.query[i] = (d.query[i][0], ",".join([d.query[i][1]] * rng.choice([2, 50, 600])))
    else:
        d.raw_query += rng.choice(RAW_QUERY)
    return f"query: {how}"


RETRIEVE_URLS = [
    "[127.0.0.1]", "http://[127.0.0.1]/dicom-web/", "http://[::1]:80/", "127.0.0.1:99999/x", "//x",
    "http://user@127.0.0.1/", "http://127.0.0.1:0/", "ftp://127.0.0.1/", "http://127.0.0.1/%2e%2e/",
    "http://127.0.0.1:-1/", "http://[v1.x]/", "http://[fe80::1%25eth0]/", "https:///", "http://é/",
]  # fmt: skip


def retrieve_url(rng: random.Random, d: Draft, p: Palette) -> str:
    good = rng.choice(p.pacs_urls)
    value = rng.choice([*RETRIEVE_URLS, good, good + "../", good.replace("http://", ""), nasty(rng, good)])
    d.query.append((rng.choice(["retrieveURL", "retrieveurl", "RetrieveURL"]), value))
    return f"query: retrieveURL={value[:50]!r}"


QIDO = [
    ("00100020", "x"), ("0010,0020", "*"), ("StudyDate", "20250101-20241231"), ("StudyDate", "2025"),
    ("StudyDate", "-"), ("StudyDate", "20250231"), ("PatientName", "*"), ("PatientName", "[a-z]"),
    ("Modality", "CT\\MR"), ("StudyInstanceUID", "1.2,1.3"), ("includefield", "nonsense"),
    ("includefield", "00100010"), ("SOPInstanceUID", "x"), ("ModalitiesInStudy", ""), ("limit", "-1"),
    ("offset", "1e99"), ("fuzzymatching", "maybe"), ("StudyTime", "1200-"), ("FFFFFFFF", "1"),
    ("0020000D", "9" * 70), ("AccessionNumber", "*?*"), ("PatientID", "\\"),
]  # fmt: skip


RENDERED = [
    ("window", "nan,nan"), ("window", "inf,1"), ("window", "1e308,1e-308"), ("window", "40,0"),
    ("window", "40,400,foo"), ("window", "a,b"), ("window", "40"), ("window", "-1e308,1e308,sigmoid"),
    ("quality", "0"), ("quality", "101"), ("quality", "1e3"), ("quality", "abc"), ("viewport", "0,0"),
    ("viewport", "1,1"), ("viewport", "99999,99999"), ("viewport", "1e9,1"), ("viewport", "-1,5"),
    ("viewport", "64"), ("viewport", "1,100000"), ("window", "40,400,linear-exact"),
]  # fmt: skip


def rendered_param(rng: random.Random, d: Draft, p: Palette) -> str:
    key, value = rng.choice(RENDERED)
    d.query.append((key, value))
    return f"query: rendered {key}={value!r}"


def qido_key(rng: random.Random, d: Draft, p: Palette) -> str:
    key, value = rng.choice(QIDO)
    d.query.append((key, value))
    return f"query: QIDO {key}={value[:20]!r}"


# -- headers -----------------------------------------------------------------------------------------
HEADER_VALUES: dict[bytes, list[bytes]] = {
    b"Accept": [
        b"", b"*/", b"text/html", b"application/fhir+xml", b"application/dicom;q=abc", b"*/*;q=2",
        b'multipart/related; type="application/dicom"; transfer-syntax=*', b"multipart/related",
        b'multipart/related; type="image/jpeg"', b"image/*, application/*;q=0", b";;;,,,", b"a/b" * 3000,
        b"application/json, " * 500,
    ],
    b"Content-Type": [
        b"", b"text/plain", b"application/fhir+json; charset=utf-32", b"multipart/related; boundary=",
        b'multipart/related; type="application/dicom"; boundary="', b"application/x-www-form-urlencoded",
        b"multipart/form-data; boundary=x", b"application/json; charset=\xff", b"multipart/related; type=",
    ],
    b"Forwarded": [
        b'host="evil.example";proto=https', b"for=1.2.3.4;host=[::1]", b'host="a/../b";proto=http',
        b"proto=javascript", b"host=" + b"a," * 2000, b'host="127.0.0.1:1";proto=http', b'host="', b";;;",
    ],
    b"X-Forwarded-Prefix": [b"/../x", b"/%2e%2e", b"//evil", b"/a?b#c", b"/\xc3\xa9"],
    b"Host": [b"", b"evil.example", b"a" * 5000, b"[::1", b"x:99999", b"\xc3\xa9", b"127.0.0.1:1/path"],
    b"Range": [b"bytes=0-0", b"bytes=-1", b"bytes=99999999999999999999-", b"bytes=a-b", b"items=0-1"],
    b"If-None-Match": [b"*", b'"x"', b'"' + b"x" * 9000 + b'"', b","],
    b"Accept-Encoding": [b"gzip, deflate, br", b"*;q=0", b"identity;q=0"],
    b"Expect": [b"100-continue", b"fuzz"],
    b"X-Forwarded-For": [b"1.2.3.4, evil", b"[::1]"],
}  # fmt: skip
ANY_HEADER = [b"X-Request-Id", b"Accept", b"Content-Type", b"Forwarded", b"Host", b"X-Forwarded-Prefix"]


def header_value(rng: random.Random, d: Draft, p: Palette) -> str:
    name = rng.choice([*HEADER_VALUES, *ANY_HEADER, b"X-Request-Id"])
    typical = HEADER_VALUES.get(name)
    d.set_header(name, rng.choice(typical) if typical and rng.random() < 0.5 else _bytes(rng))
    return f"header: {name.decode()}"


def _bytes(rng: random.Random) -> bytes:
    """A hostile header value: non-ASCII (latin-1 or UTF-8), control characters, or oversized."""
    return rng.choice(
        [
            "é".encode("latin-1"), "é".encode(), "\u202e".encode(), b"\xff\xfe", b"\x01", b"\x7f", b"",
            b"x" * rng.choice([9000, 70000]), b'"', b"a,b", b"\\",
            nasty(rng).encode("utf-8", "surrogatepass"),
        ]
    )  # fmt: skip


FORWARDED_PAIRS = [
    (b'host="evil.example";proto=https', b"/wado"), (b'host="[::1]:1";proto=http', b"/a/b"),
    (b'host="a b";proto=http', b"/"), (b'host="x";proto=https', b"/%2e%2e"),
    (b"host=x;proto=http", b"/p" * 3000),
    (b'host="x";proto=http', b"/\xc3\xa9"), (b'host="127.0.0.1:99999";proto=https', b"/wado-rs"),
]  # fmt: skip


def forwarded(rng: random.Random, d: Draft, p: Palette) -> str:
    """Both headers that name a public base (ncp.forwarded): a PACS or border echoes it into answers."""
    value, prefix = rng.choice(FORWARDED_PAIRS)
    d.set_header(b"Forwarded", value)
    d.set_header(b"X-Forwarded-Prefix", prefix)
    return "header: Forwarded + X-Forwarded-Prefix"


def header_reshape(rng: random.Random, d: Draft, p: Palette) -> str:
    how = rng.choice(["duplicate", "drop", "many", "bad-name"])
    if how == "duplicate":
        name = rng.choice([b"Host", b"X-Request-Id", b"Content-Type", b"Accept", b"Authorization"])
        d.headers += [(name, b"a"), (name, b"b")]
    elif how == "drop" and d.headers:
        del d.headers[rng.randrange(len(d.headers))]
    elif how == "many":
        d.headers += [(f"X-Fuzz-{i}".encode(), b"v" * 100) for i in range(rng.choice([100, 500]))]
    else:
        d.headers.append((rng.choice([b"X Y", b"X-\xc3\xa9", b"", b"X:Y"]), b"v"))
    return f"header: {how}"


def framing(rng: random.Random, d: Draft, p: Palette) -> str:
    """Bodies the announced length or encoding contradicts (smuggling attempts)."""
    body = d.render_body() or b"x" * 10
    how = rng.choice(["short-length", "chunked-bad", "both", "negative", "body-on-get"])
    d.body = body
    if how == "short-length":
        d.set_header(b"Content-Length", str(max(0, len(body) - 5)).encode())
    elif how == "chunked-bad":
        d.set_header(b"Transfer-Encoding", b"chunked")
        d.body = b"zz\r\n" + body + b"\r\n0\r\n\r\n"
    elif how == "both":
        d.set_header(b"Transfer-Encoding", b"chunked")
        d.set_header(b"Content-Length", str(len(body)).encode())
    elif how == "negative":
        d.set_header(b"Content-Length", b"-1")
    else:
        d.body = json.dumps({"resourceType": "Bundle"}).encode()
    return f"framing: {how}"


# -- method and credentials --------------------------------------------------------------------------
def method(rng: random.Random, d: Draft, p: Palette) -> str:
    choices = ["HEAD", "POST", "PUT", "PATCH", "OPTIONS", "TRACE", "get", "FUZZ", "CONNECT"]
    if "registry" not in d.listener:  # the registry's DELETE would really delete a seeded document
        choices.append("DELETE")
    d.method = rng.choice([c for c in choices if c != d.method])
    return f"method: {d.method}"


def credentials(rng: random.Random, d: Draft, p: Palette) -> str:
    kind, _, arg = d.auth.partition(":")
    patient = arg if arg in p.patients else ""
    other = rng.choice([x for x in p.patients if x != patient] or list(p.patients))
    border = kind.startswith("assert")
    bad_literal = rng.choice(
        ["", "Bearer", "Bearer x.y.z", "Basic dXNlcjpwYXNz", "Bearer " + "A" * 20000, "bearer  ",
         "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", "Bearer é", nasty(rng)]
    )  # fmt: skip
    options = (
        ["", f"replay:{patient}", f"expired-assert:{patient or other}", f"audience:{patient}",
         f"assert:{other}", "assert-hcp", f"raw-assert:{bad_literal}", f"raw-auth:{bad_literal}"]
        if border
        else ["", "hcp", f"treatment:{other}", f"expired:{patient or other}", f"foreign:{patient or other}",
              f"raw-auth:{bad_literal}", f"raw-assert:{bad_literal}"]
    )  # fmt: skip
    d.auth = rng.choice([o for o in options if o != d.auth])
    return f"auth: {d.auth.split(':')[0] or 'none'}"


# -- bodies ------------------------------------------------------------------------------------------
JSON_VALUES: list[Any] = [
    None, True, 0, -1, 1e308, "x", "", [], {}, [[]], {"resourceType": "Foo"}, "A" * 10000, 10**30, "\ud800",
    "é\u202e", {"reference": "Patient/../../x"}, [None] * 50,
]  # fmt: skip
RESOURCE_TYPES: list[Any] = [
    "Foo",
    "",
    "patient",
    "Bundle",
    "OperationOutcome",
    3,
    None,
    "Binary\x00",
    "List ",
]


def _nodes(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in a JSON value (lists by index)."""
    out = [path]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _nodes(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _nodes(v, (*path, i))
    return out


def _parent(root: Any, path: tuple[Any, ...]) -> Any:
    node = root
    for key in path[:-1]:
        node = node[key]
    return node


def json_node(rng: random.Random, d: Draft, p: Palette) -> str:
    paths = [x for x in _nodes(d.json) if x]
    path = rng.choice(paths)
    parent = _parent(d.json, path)
    if rng.random() < 0.3 and isinstance(parent, dict):
        del parent[path[-1]]
        return f"json: delete {'/'.join(map(str, path))}"
    parent[path[-1]] = copy.deepcopy(rng.choice([*JSON_VALUES, nasty(rng)]))  # never share palette objects
    return f"json: {'/'.join(map(str, path))} retyped"


def json_resource_type(rng: random.Random, d: Draft, p: Palette) -> str:
    entries = d.json.get("entry") if isinstance(d.json, dict) else None
    if not isinstance(entries, list) or not entries or not isinstance(entries[0], dict):
        d.json = {"resourceType": rng.choice(RESOURCE_TYPES)}
        return "json: top-level resourceType"
    i = rng.randrange(len(entries))
    resource = entries[i].get("resource") if isinstance(entries[i], dict) else None
    if isinstance(resource, dict):
        resource["resourceType"] = rng.choice(RESOURCE_TYPES)
    return f"json: entry {i} resourceType"


def json_entries(rng: random.Random, d: Draft, p: Palette) -> str:
    entries = d.json.get("entry") if isinstance(d.json, dict) else None
    if not isinstance(entries, list) or not entries:
        return json_node(rng, d, p)
    how = rng.choice(["duplicate", "drop", "request", "deep", "many"])
    i = rng.randrange(len(entries))
    if how == "duplicate":
        entries.append(copy.deepcopy(entries[i]))
    elif how == "drop":
        del entries[i]
    elif how == "request" and isinstance(entries[i], dict):
        entries[i]["request"] = {
            "method": rng.choice(["GET", "DELETE", "PUT", nasty(rng)]),
            "url": nasty(rng),
        }
    elif how == "deep":
        deep: Any = {"url": "http://x", "valueString": "a"}
        for _ in range(rng.choice([50, 200])):
            deep = {"url": "http://x", "extension": [deep]}
        entries.append({"resource": {"resourceType": "Basic", "extension": [deep]}})
    else:
        entries.extend(copy.deepcopy(entries[-1:]) * 200)
    return f"json: entries {how}"


RAW_JSON = [
    b"", b"null", b"[]", b'"x"', b"{}", b"\xef\xbb\xbf{}", b"\xff\xfe{", b"{" * 100000, b"[" * 50000,
    b'{"resourceType": "Bundle", "type": "transaction", "entry": NaN}', b'{"a": 1e999}', b"1" * 5000,
    b'{"resourceType": "Bundle", "resourceType": "Patient"}', b'{"resourceType": "\\ud800"}',
]  # fmt: skip


def json_text(rng: random.Random, d: Draft, p: Palette) -> str:
    text = d.render_body()
    how = rng.choice(["truncate", "append", "flip", "literal"])
    if how == "truncate":
        d.body = text[: rng.randrange(max(1, len(text)))]
    elif how == "append":
        d.body = text + rng.choice([b"}", b",", b"\x00", b"garbage", b"\xff"])
    elif how == "flip" and text:
        i = rng.randrange(len(text))
        d.body = text[:i] + bytes([rng.randrange(256)]) + text[i + 1 :]
    else:
        d.body = rng.choice(RAW_JSON)
    return f"body: {how}"


def form_field(rng: random.Random, d: Draft, p: Palette) -> str:
    assert d.form is not None
    how = rng.choice(["drop", "duplicate", "value", "key", "raw", "multipart"])
    i = rng.randrange(len(d.form)) if d.form else 0
    if how == "drop" and d.form:
        del d.form[i]
    elif how == "duplicate" and d.form:
        d.form.append((d.form[i][0], nasty(rng)))
    elif how == "value" and d.form:
        d.form[i] = (d.form[i][0], nasty(rng, d.form[i][1]))
    elif how == "key" and d.form:
        d.form[i] = (nasty(rng), d.form[i][1])
    elif how == "multipart":
        d.set_header(
            b"Content-Type", rng.choice([b"multipart/form-data; boundary=xx", b"multipart/form-data"])
        )
        d.body = rng.choice(
            [b"--xx\r\nContent-Disposition: form-data\r\n\r\nv\r\n--xx--\r\n", b"--xx\r\n", b"garbage"]
        )
    else:
        d.body = rng.choice(
            [b"%ff%fe=%ff", b"a=%", b"&&&", b"=", b"a=1;b=2", b"\xff\xfe", b"a=" + b"x" * 200000]
        )
    return f"form: {how}"


# -- STOW-RS: every variant is unstorable ------------------------------------------------------------
_EXPLICIT_LE = b"1.2.840.10008.1.2.1\x00"


def _each_part(d: Draft, change: Callable[[bytes], bytes]) -> None:
    assert d.parts is not None
    d.parts = [change(part) for part in d.parts]


def stow_garble(rng: random.Random, d: Draft, p: Palette) -> str:
    how = rng.choice(
        ["truncated", "cut", "magic", "big-endian", "bad-uid", "other-study", "part-type", "framing"]
    )
    if how == "truncated":  # valid instances, but the message has no closing delimiter
        body = d.render_body()
        d.body = body[: body.rindex(b"--" + BOUNDARY.encode() + b"--") - rng.randint(0, 200)]
    elif how == "cut":  # ends inside Pixel Data: shorter than its length
        _each_part(d, lambda b: b[: -rng.randint(1, min(2000, len(b) // 2))])
    elif how == "magic":
        _each_part(d, lambda b: b[:128] + b"DICN" + b[132:])
    elif how == "big-endian":  # (a part in another syntax gets its magic broken instead)
        _each_part(
            d,
            lambda b: (
                b.replace(_EXPLICIT_LE, b"1.2.840.10008.1.2.2\x00", 1)
                if _EXPLICIT_LE in b
                else b[:128] + b"DICN" + b[132:]
            ),
        )
    elif how == "bad-uid":
        _each_part(d, _break_uids)
    elif how == "other-study":
        d.segments = ["dicom-web", "studies", rng.choice(p.study_uids) + ".9"]
    elif how == "part-type":
        d.body = _typed_parts(
            d, rng.choice([b"application/octet-stream", b"text/plain", b"application/dicom+json"])
        )
    else:
        d.body = rng.choice(_BAD_FRAMES)
    return f"stow: {how}"


def _break_uids(part: bytes) -> bytes:
    """Every UID value of the instance made of letters: none passes PS3.5 9.1."""
    return re.sub(rb"(2\.25\.\d{10,})", lambda m: b"X" * len(m[1]), part)


def _typed_parts(d: Draft, content_type: bytes) -> bytes:
    assert d.parts is not None
    dash = b"--" + BOUNDARY.encode()
    pieces = [dash + b"\r\nContent-Type: " + content_type + b"\r\n\r\n" + part for part in d.parts]
    return b"\r\n".join([*pieces, dash + b"--\r\n"])


_B = BOUNDARY.encode()
_BAD_FRAMES = [
    b"", b"--" + _B + b"--\r\n", b"--" + _B + b"\r\nContent-Type: application/dicom\r\n\r\n",
    b"--" + _B + b"\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\nx\r\n--" + _B + b"--",
    b"--" + _B + b"\r\nbroken header line\r\n\r\nDICM\r\n--" + _B + b"--\r\n",
    b"--wrong\r\n\r\nx\r\n--wrong--",
    b"--" + _B + b"junk\r\n\r\nx\r\n--" + _B + b"--", b"\x00" * 1000, b"--" + _B + b" " * 2000,
]  # fmt: skip


def stow_content_type(rng: random.Random, d: Draft, p: Palette) -> str:
    value = rng.choice(
        [b"multipart/related", b"multipart/related; boundary=" + b"x" * 300, b"application/dicom",
         b'multipart/related; type="application/dicom+json"; boundary=' + _B,
         b"multipart/related; boundary=" + _B + b"; type=application/dicom",
         b"multipart/mixed; boundary=" + _B]
    )  # fmt: skip
    d.set_header(b"Content-Type", value)
    return "stow: Content-Type"


def stow_too_big(rng: random.Random, d: Draft, p: Palette) -> str:
    d.body = d.render_body()
    d.set_header(b"Content-Length", str((1 << 30) + 1).encode())
    return "stow: announced 1 GiB + 1"


# -- choosing ----------------------------------------------------------------------------------------
# Weights: a broken path mostly meets the router's 404, so paths get less than what a route reads.
GENERIC: list[tuple[Mutator, int]] = [
    (dot_segment, 2), (replace_segment, 2), (encode_segment, 1), (overlong_segment, 1), (reshape_path, 1),
    (dotted_id, 2), (query_value, 3), (query_unknown, 2), (query_reshape, 2), (header_value, 4),
    (header_reshape, 1), (framing, 1), (method, 1),
]  # fmt: skip


def applicable(d: Draft) -> list[tuple[Mutator, int]]:
    out = list(GENERIC)
    if d.auth:
        out.append((credentials, 4))
    if d.json is not None:
        out += [(json_node, 8), (json_resource_type, 4), (json_entries, 4), (json_text, 3)]
    if d.form is not None:
        out.append((form_field, 10))
    if d.parts is not None:
        out += [(stow_content_type, 1), (stow_too_big, 1)]
    if "RAD-160" in d.family or "WADO" in d.family or "STOW" in d.family:
        out.append((forwarded, 2))
    if "RAD-160" in d.family:
        out.append((retrieve_url, 3))
    if "rendered" in d.segments:
        out.append((rendered_param, 6))
    if "QIDO" in d.family:
        out.append((qido_key, 4))
    return out


def fresh_masters(rng: random.Random, bundle: Any) -> None:
    """A new document uniqueId per ITI-65 request: a posted Bundle must never replace (supersede) a
    seeded document, or later requests for it would all be 410."""
    for entry in bundle.get("entry", []) if isinstance(bundle, dict) else []:
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "DocumentReference":
            uid = f"urn:oid:2.25.{rng.getrandbits(100)}"
            for identifier in [resource["masterIdentifier"], *resource.get("identifier", [])]:
                identifier["value"] = uid


def unmutated(rng: random.Random, template: Template, host: str) -> Draft:
    d = Draft.of(template, host)
    fresh_masters(rng, d.json)
    return d


def mutate(rng: random.Random, template: Template, host: str, palette: Palette) -> Draft:
    """One hostile variant of ``template`` (about one in twenty-five left valid, as a control)."""
    d = unmutated(rng, template, host)
    rounds = [1, 1, 1, 2, 2, 3]
    if d.parts is not None:
        d.notes.append(stow_garble(rng, d, palette))
        rounds = [0, 0, 1, 1, 2]  # already hostile
    elif rng.random() < 0.04:
        return d
    choices = applicable(d)
    for _ in range(rng.choice(rounds)):
        mutator = rng.choices([m for m, _ in choices], weights=[w for _, w in choices])[0]
        d.notes.append(mutator(rng, d, palette))
    return d
