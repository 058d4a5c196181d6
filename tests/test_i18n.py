"""The Russian catalogue is complete and the compiled .mo matches the .po that is committed."""

import ast
import gettext
from pathlib import Path

from django.conf import settings

PO = Path(settings.BASE_DIR) / "locale" / "ru" / "LC_MESSAGES" / "django.po"


def parse_po(path: Path) -> list[tuple[str, str, bool]]:
    """(msgid, msgstr, fuzzy) for every entry but the header; plural forms are not used here."""
    entries, current, field, fuzzy = [], {}, None, False
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if line.startswith("#,") and "fuzzy" in line:
            fuzzy = True
        elif line.startswith(("msgid ", "msgstr ")):
            field, _, literal = line.partition(" ")
            current[field] = ast.literal_eval(literal)
        elif line.startswith('"') and field:
            current[field] += ast.literal_eval(line)
        elif not line.strip():
            if current.get("msgid"):
                entries.append((current["msgid"], current.get("msgstr", ""), fuzzy))
            current, field, fuzzy = {}, None, False
    return entries


def test_every_message_has_a_russian_translation():
    entries = parse_po(PO)
    assert len(entries) > 50
    untranslated = [msgid for msgid, msgstr, fuzzy in entries if not msgstr or fuzzy]
    assert untranslated == []


def test_compiled_catalogue_matches_the_po_file():
    with open(PO.with_suffix(".mo"), "rb") as handle:
        catalogue = gettext.GNUTranslations(handle)
    stale = [msgid for msgid, msgstr, _ in parse_po(PO) if catalogue.gettext(msgid) != msgstr]
    assert stale == [], "run `make messages` to recompile locale/ru/LC_MESSAGES/django.mo"
