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
