"""The token's wire form: base64url of a macaroon in V2 binary format, with a JSON identifier.

Decoding is done here rather than by ``pymacaroons`` on the verification path: its V2 parser copies the
remaining buffer for every field and costs ~75 µs for a six-caveat token, most of the miss budget. This
decoder follows libmacaroons' format.txt and is stricter (no trailing bytes, no V1, no unknown fields);
tests check it agrees with pymacaroons on every token pymacaroons produces. Minting and attenuation still
use pymacaroons to build tokens.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass

from authz.errors import InvalidArgument

from ._keys import valid_name

#: Longest accepted token string (base64url characters). Bounds the work per token and the memory of the
#: authentication cache (``cache_size`` entries of at most this size).
MAX_TOKEN_LENGTH = 8192
#: Most caveats in one token (all attenuations included).
MAX_CAVEATS = 64
IDENTIFIER_VERSION = 1

_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*={0,2}")
_TO_STD_B64 = str.maketrans("-_", "+/")

_V2 = 2
_EOS, _LOCATION, _IDENTIFIER, _VID, _SIGNATURE = 0, 1, 2, 4, 6
_SECTION_FIELDS = frozenset((_LOCATION, _IDENTIFIER, _VID))
_IDENTIFIER_KEYS = frozenset(("v", "tenant", "kid", "jti"))
_JTI_RE = re.compile(r"[\x21-\x7e]{1,128}")


@dataclass(frozen=True, slots=True)
class RawMacaroon:
    """A decoded, unverified macaroon."""

    location: str
    identifier: bytes
    caveats: tuple[bytes, ...]
    signature: bytes


@dataclass(frozen=True, slots=True)
class Identifier:
    version: int
    tenant: str
    kid: str
    jti: str


def malformed(why: str) -> InvalidArgument:
    return InvalidArgument(f"malformed token: {why}", reason="TOKEN_MALFORMED")


def b64url_decode(token: str) -> bytes:
    """Decode base64url with or without ``=`` padding; anything outside the alphabet is refused."""
    if not isinstance(token, str):
        raise malformed(f"expected a string, got {type(token).__name__}")
    if not token:
        raise malformed("empty")
    if len(token) > MAX_TOKEN_LENGTH:
        raise malformed(f"longer than {MAX_TOKEN_LENGTH} characters")
    if not _B64URL_RE.fullmatch(token):
        raise malformed("not base64url")
    body = token.rstrip("=")
    if len(body) % 4 == 1 or (len(body) != len(token) and len(token) % 4):
        raise malformed("bad base64url length or padding")
    try:
        return binascii.a2b_base64((body + "=" * (-len(body) % 4)).translate(_TO_STD_B64))
    except binascii.Error:
        raise malformed("not base64url") from None


def b64url_encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii").translate(_TO_URL_B64).rstrip("=")


_TO_URL_B64 = str.maketrans("+/", "-_")


def decode_macaroon(data: bytes) -> RawMacaroon:
    """Parse a V2 binary macaroon with first-party caveats only.

    Raises InvalidArgument("malformed token: ...") or InvalidArgument("third-party caveats are not
    supported").
    """
    n = len(data)
    if n == 0 or data[0] != _V2:
        raise malformed("not a V2 binary macaroon")
    pos = 1
    header, pos = _section(data, pos, n)
    location = b""
    if header and header[0][0] == _LOCATION:
        location = header.pop(0)[1]
    if len(header) != 1 or header[0][0] != _IDENTIFIER:
        raise malformed("invalid macaroon header")
    identifier = header[0][1]
    caveats: list[bytes] = []
    while True:
        fields, pos = _section(data, pos, n)
        if not fields:
            break
        types = [t for t, _ in fields]
        if _VID in types:
            raise InvalidArgument("third-party caveats are not supported", reason="TOKEN_THIRD_PARTY")
        if types != [_IDENTIFIER]:
            raise malformed("invalid caveat fields")
        if len(caveats) == MAX_CAVEATS:
            raise malformed(f"more than {MAX_CAVEATS} caveats")
        caveats.append(fields[0][1])
    # the signature field: type 6, length 32 (single-byte varints), then nothing
    if pos + 34 != n or data[pos] != _SIGNATURE or data[pos + 1] != 32:
        raise malformed("bad signature field or trailing bytes")
    pos += 2
    try:
        loc = location.decode()
    except UnicodeDecodeError:
        raise malformed("location is not UTF-8") from None
    return RawMacaroon(loc, identifier, tuple(caveats), data[pos:])


def _uvarint(data: bytes, pos: int, n: int) -> tuple[int, int]:
    value = shift = 0
    while pos < n and shift < 35:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise malformed("truncated or oversized varint")


def _section(data: bytes, pos: int, n: int) -> tuple[list[tuple[int, bytes]], int]:
    """Fields up to the next end-of-section marker, in strictly increasing type order."""
    fields: list[tuple[int, bytes]] = []
    last = 0
    while True:
        if pos >= n:
            raise malformed("truncated")
        # every known field type fits one varint byte; a multi-byte one is unknown anyway
        field_type = data[pos]
        pos += 1
        if field_type == _EOS:
            return fields, pos
        if field_type not in _SECTION_FIELDS or field_type <= last:
            raise malformed("unknown or out-of-order field")
        if pos < n and data[pos] < 0x80:  # fast path: length < 128
            size = data[pos]
            pos += 1
        else:
            size, pos = _uvarint(data, pos, n)
        end = pos + size
        if end > n:
            raise malformed("field extends past the end")
        fields.append((field_type, data[pos:end]))
        pos = end
        last = field_type


def encode_identifier(tenant: str, kid: str, jti: str) -> bytes:
    return json.dumps(
        {"v": IDENTIFIER_VERSION, "tenant": tenant, "kid": kid, "jti": jti},
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise ValueError("duplicate key")
    return result


_ID_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates)


def decode_identifier(identifier: bytes) -> Identifier:
    """Parse ``{"v":1,"tenant":...,"kid":...,"jti":...}`` (exactly these keys)."""
    try:
        obj = _ID_DECODER.decode(identifier.decode())
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise malformed("identifier is not a JSON object") from None
    if not isinstance(obj, dict) or obj.keys() != _IDENTIFIER_KEYS:
        raise malformed("identifier must have exactly the keys v, tenant, kid, jti")
    version = obj["v"]
    if type(version) is not int:
        raise malformed("identifier version is not an integer")
    if version != IDENTIFIER_VERSION:
        raise InvalidArgument(f"unsupported token version {version}", reason="TOKEN_MALFORMED")
    tenant, kid, jti = obj["tenant"], obj["kid"], obj["jti"]
    if not valid_name(tenant):
        raise malformed("invalid tenant in identifier")
    if not valid_name(kid):
        raise malformed("invalid key id in identifier")
    if not isinstance(jti, str) or not _JTI_RE.fullmatch(jti):
        raise malformed("invalid jti in identifier")
    return Identifier(version, tenant, kid, jti)


def valid_jti(jti: object) -> bool:
    return isinstance(jti, str) and _JTI_RE.fullmatch(jti) is not None
