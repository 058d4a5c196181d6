"""build_widget and Salesbot's "send SMS" step (issue 17): the `salesbot_designer` location and block (a logo and
the send_sms handler with its text and template settings), their i18n, and salesbot.js under the marketplace
rules."""

import json
import zipfile

import pytest

from accounts.widget_archive import widget_check

from .test_build_widget import SOURCE, build, edit_json, refused, src  # noqa: F401 (src: a fixture)


def test_the_widget_carries_the_salesbot_step(tmp_path):
    out = build(SOURCE, tmp_path)
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
        ru = json.loads(archive.read("i18n/ru.json"))
        en = json.loads(archive.read("i18n/en.json"))
        script = archive.read("script.js").decode()
    assert "salesbot_designer" in manifest["locations"]
    block = manifest["salesbot_designer"]
    assert block["logo"].lstrip("/") in names and "salesbot.js" in names and "picker.js" in names
    assert "/picker.js" in script  # loaded with salesbot.js: its template picker and preview
    handler = block["send_sms"]
    assert set(handler["settings"]) == {"text", "template_id"}
    assert {s["type"] for s in handler["settings"].values()} <= {"text", "numeric", "url"}
    for texts in (ru, en):
        assert texts["salesbot"]["handler_name"] and texts["salesbot"]["text"] and texts["salesbot"]["template_id"]
        assert texts["salesbot"]["exit_sent"] and texts["salesbot"]["exit_failed"]
    assert "salesbotDesignerSettings" in script and "onSalesbotDesignerSave" in script
    assert widget_check(out.read_bytes()) == []


@pytest.mark.parametrize("change,expected", [
    (lambda m: m.pop("salesbot_designer"), "the salesbot_designer location needs a salesbot_designer block"),
    (lambda m: m["locations"].remove("salesbot_designer"), "a salesbot_designer block needs the salesbot_designer"),
    (lambda m: m["salesbot_designer"].update(logo="/images/nope.png"), "salesbot_designer.logo must name an image"),
    (lambda m: m["salesbot_designer"].pop("send_sms"), "salesbot_designer.send_sms with the settings text, "
                                                        "template_id is required"),
    (lambda m: m["salesbot_designer"]["send_sms"]["settings"].pop("template_id"), "salesbot_designer.send_sms with"),
    (lambda m: m["salesbot_designer"]["send_sms"]["settings"]["text"].update(type="pass"),
     "salesbot_designer.send_sms.settings.text needs a name"),
    (lambda m: m["salesbot_designer"]["send_sms"].pop("name"), "salesbot_designer.send_sms needs a name"),
])
def test_a_salesbot_block_smsgate_cannot_serve_is_refused(src, tmp_path, change, expected):  # noqa: F811
    edit_json(src / "manifest.json", change)
    refused(src, tmp_path, f"manifest.json: {expected}")


def test_the_steps_settings_need_their_names_in_every_language(src, tmp_path):  # noqa: F811
    edit_json(src / "i18n" / "en.json", lambda t: t["salesbot"].pop("handler_name"))
    edit_json(src / "i18n" / "ru.json", lambda t: t["salesbot"].pop("handler_name"))
    refused(src, tmp_path, "has no text for 'salesbot.handler_name'")


def test_salesbot_js_is_required_and_follows_the_marketplace_rules(src, tmp_path):  # noqa: F811
    path = src / "salesbot.js"
    path.write_text(path.read_text().replace("'use strict';", "'use strict'; console.log('x');"))
    refused(src, tmp_path, "salesbot.js: only console.debug may be used")
    path.unlink()
    refused(src, tmp_path, "salesbot.js: is missing")


# --- the lists' dialog (llist, clist) ------------------------------------------------------------------------------
def test_the_widget_carries_the_lists_dialog(tmp_path):
    out = build(SOURCE, tmp_path)
    with zipfile.ZipFile(out) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        names = archive.namelist()
        script = archive.read("script.js").decode()
        ru = json.loads(archive.read("i18n/ru.json"))
        en = json.loads(archive.read("i18n/en.json"))
    assert {"llist", "clist"} <= set(manifest["locations"]) and "listsend.js" in names
    assert "listsend.js" in script and "selected" in script
    assert set(ru["lists"]) == set(en["lists"]) and ru["lists"]["send"] and en["lists"]["cancel"]
    assert widget_check(out.read_bytes()) == []


def test_the_lists_dialog_module_is_required(src, tmp_path):  # noqa: F811
    (src / "listsend.js").unlink()
    refused(src, tmp_path, "listsend.js: is missing (the dialog of llist and clist)")
