"""Part counting per 3GPP TS 23.038 (worked values from sms-providers.md §7)."""

import pytest

from deliveries.segments import segment_info


@pytest.mark.parametrize(
    "text,encoding,segments",
    [
        ("", "gsm7", 0),
        ("a" * 160, "gsm7", 1),
        ("a" * 161, "gsm7", 2),
        ("a" * 306, "gsm7", 2),
        ("a" * 307, "gsm7", 3),
        ("€" * 80, "gsm7", 1),  # extension characters count double
        ("€" * 81, "gsm7", 2),
        ("a" * 152 + "€" + "a" * 10, "gsm7", 2),  # an escape pair is never split
        ("Ваш код: 1234", "ucs2", 1),
        ("Я" * 70, "ucs2", 1),
        ("Я" * 71, "ucs2", 2),
        ("Я" * 134, "ucs2", 2),
        ("Я" * 135, "ucs2", 3),
        ("😀" * 35, "ucs2", 1),  # surrogate pairs count two
        ("😀" * 36, "ucs2", 2),
        ("a" * 66 + "😀", "ucs2", 1),
        ("a" * 70 + "😀", "ucs2", 2),
        ("Code ` 1", "ucs2", 1),  # the backtick is not GSM-7
        ("ё", "ucs2", 1),
        ("Hello {name} [1] ~ | \\ ^", "gsm7", 1),
    ],
)
def test_segments(text, encoding, segments):
    info = segment_info(text)
    assert (info.encoding, info.segments) == (encoding, segments)


def test_units_count_extension_characters_twice():
    assert segment_info("a€").units == 3
    assert segment_info("я😀").units == 3


@pytest.mark.parametrize(
    "text,encoding,units,segments",
    [
        # Cases where a naive units/153 (or /67) count gives a different answer (3GPP TS 23.038 rules):
        ("a" * 152 + "€" + "a" * 152, "gsm7", 306, 3),  # the escape pair may not straddle parts 1 and 2
        ("a" * 153 + "€" + "a" * 151, "gsm7", 306, 2),  # ... but fits exactly at the start of part 2
        ("a" * 66 + "😀" + "a" * 66, "ucs2", 134, 3),  # the surrogate pair may not straddle parts 1 and 2
        ("Я" * 67 + "😀" + "Я" * 65, "ucs2", 134, 2),
        ("\f" * 80, "gsm7", 160, 1),  # form feed is an extension character: two septets
        ("\f" * 81, "gsm7", 162, 2),
        ("a\x1bb", "ucs2", 3, 1),  # a raw ESC is not a character of its own in GSM-7
        ("Ç ç", "ucs2", 3, 1),  # the basic table has Ç (0x09) but not ç
        ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ¤¡ÄÖÑÜ§¿äöñüà", "gsm7", 44, 1),  # the whole non-ASCII basic table
        ("«Код»", "ucs2", 5, 1),  # typographic quotes are not GSM-7
        ("a" * 1530, "gsm7", 1530, 10),
        ("Я" * 670, "ucs2", 670, 10),
    ],
)
def test_boundaries(text, encoding, units, segments):
    info = segment_info(text)
    assert (info.encoding, info.units, info.segments) == (encoding, units, segments)
