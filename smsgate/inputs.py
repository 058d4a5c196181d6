"""Reading what comes from outside (issue 13): one set of rules for every machine endpoint
(smsgate/drf.py applies them to the account API's parser and fields).

- A number is ASCII digits 0-9. Python's `int()`, `str.isdigit()` and regex `\\d` also take
  superscripts, Arabic-Indic or fullwidth digits (and `int()` takes "1_000" and spaces); none of
  them comes from amoCRM or a provider.
- An id that reaches the database fits PostgreSQL's bigint (a larger one is a database error).
- JSON is bounded in depth before it is decoded (the decoder recurses, and a few kilobytes of
  `[[[[` are a RecursionError), and NaN/Infinity are not JSON.
- Text that reaches a text column holds no NUL (PostgreSQL refuses it) and no lone surrogate
  (it cannot be encoded).
"""

import json
import re

BIGINT_MAX = 2**63 - 1
# Our bodies nest two levels ({"credentials": {...}}); providers' reports three or four.
JSON_MAX_DEPTH = 32

_ID = re.compile(r"[1-9][0-9]{0,18}")


def ascii_digits(value) -> bool:
    """A non-empty string of the digits 0-9 and nothing else."""
    return isinstance(value, str) and value.isascii() and value.isdigit()


def db_id(value) -> int | None:
    """A positive database id from outside (an int, or ASCII digits without a leading zero) that
    fits a bigint; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = int(value) if _ID.fullmatch(value) else None
    return value if isinstance(value, int) and 0 < value <= BIGINT_MAX else None


def storable_text(value) -> bool:
    """Whether a string (or every key and value of a JSON-like structure) can be stored in a text
    or JSON column: no NUL, no lone surrogate."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item or not _encodable(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return True


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# --- JSON ---------------------------------------------------------------------------------------------
class JSONTooDeep(ValueError):
    pass


# Bytes that are not JSON structure (everything but quotes and brackets), and objects read as arrays:
# nesting depth does not depend on the kind of bracket.
_NOT_STRUCTURE = bytes(set(range(256)) - set(b'"[]{}'))
_ONE_KIND = bytes.maketrans(b"{}", b"[]")


def json_too_deep(text: str, max_depth: int = JSON_MAX_DEPTH) -> bool:
    """Whether a JSON text nests deeper than `max_depth`, found without decoding it, in a few passes
    of C string operations (the decoder itself recurses, so it cannot be asked).

    Escaped backslashes and escaped quotes are dropped first, so every quote left opens or closes a
    string (UTF-8 never puts an ASCII byte inside a multi-byte character); the strings' contents are
    dropped; what is left is the structure. Each pass then removes every innermost pair "[]", one
    level. What no pass removes are brackets never closed, each a level deeper for the decoder, which
    recurses into them before it finds the error. For invalid JSON the decoder stops at its first
    error, and up to there both read the same structure, so it never goes deeper than this finds."""
    if text.count("[") + text.count("{") <= max_depth:
        return False
    raw = text.encode("utf-8", "surrogatepass").replace(b"\\\\", b"").replace(b'\\"', b"")
    structure = b"".join(raw.translate(_ONE_KIND, _NOT_STRUCTURE).split(b'"')[::2])
    if b"[" * (max_depth + 1) in structure:
        return True
    for depth in range(max_depth + 1):
        if b"[]" not in structure:
            return depth + structure.count(b"[") > max_depth
        structure = structure.replace(b"[]", b"")
    return True


def _no_constants(name):
    raise ValueError(f"{name} is not JSON")


# One decoder: json.loads() with an argument builds a new one on every call.
_DECODER = json.JSONDecoder(parse_constant=_no_constants)


def json_loads(data: bytes | str, *, max_depth: int = JSON_MAX_DEPTH):
    """Decode a JSON document from outside; ValueError if it is not UTF-8, not JSON, or nests
    deeper than `max_depth`. Bytes are UTF-8 (RFC 8259): no guessing of UTF-16 or UTF-32."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    if json_too_deep(text, max_depth):
        raise JSONTooDeep(f"JSON nested deeper than {max_depth} levels")
    return _DECODER.decode(text)
