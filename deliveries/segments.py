"""How many SMS parts a text takes, per 3GPP TS 23.038 (GSM 03.38).

GSM-7 when every character is in the basic table or its extension (extension characters take two
septets, an escape and the code); otherwise UCS-2, counted in UTF-16 code units (a character outside
the BMP, such as an emoji, takes two). One part holds 160 septets / 70 units; a concatenated part
153 / 67, because the 6-byte UDH takes room. An escape pair or a surrogate pair is never split.
"""

from dataclasses import dataclass

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7 = "gsm7"
UCS2 = "ucs2"

_LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}


@dataclass(frozen=True)
class SegmentInfo:
    encoding: str  # "gsm7" or "ucs2"
    units: int  # septets (GSM-7) or UTF-16 code units (UCS-2)
    segments: int


def _unit_sizes(text: str) -> tuple[str, list[int]]:
    """The encoding and the size of each character in units, in order."""
    if all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text) and "\x1b" not in text:
        return GSM7, [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return UCS2, [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def segment_info(text: str) -> SegmentInfo:
    encoding, sizes = _unit_sizes(text)
    single, multi = _LIMITS[encoding]
    units = sum(sizes)
    if units <= single:
        return SegmentInfo(encoding, units, 1 if units else 0)
    segments, used = 1, 0
    for size in sizes:  # fill parts greedily; a character that does not fit starts the next part
        if used + size > multi:
            segments += 1
            used = 0
        used += size
    return SegmentInfo(encoding, units, segments)
