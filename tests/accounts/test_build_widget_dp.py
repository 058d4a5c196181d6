"""build_widget and the digital pipeline's action (issue 16): the `digital_pipeline` location, the dp block
as smsgate's webhook reads it, logo_dp.png, the i18n of the action's settings, and pipeline.js under the
same marketplace rules as script.js."""

import json
import zipfile

import pytest

from accounts.widget_archive import LOGO_DP, png_size, widget_check

from .test_build_widget import BASE, SOURCE, build, edit_json, png, refused, src  # noqa: F401 (src: a fixture)


def test_the_widget_carries_the_pipeline_action(tmp_path):
    out = build(SOURCE, tmp_path)
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
        ru = json.loads(archive.read("i18n/ru.json"))
        en = json.loads(archive.read("i18n/en.json"))
        logo = archive.read(LOGO_DP[0])
    assert "digital_pipeline" in manifest["locations"]
    dp = manifest["dp"]
    assert dp["action_multiple"] is False
    assert dp["webhook_url"] == f"{BASE}/amocrm/pipeline"
    assert set(dp["settings"]) == {"template_id", "message", "key"} and dp["settings"]["key"]["required"] is True
    assert {"pipeline.js", "picker.js", "script.js", LOGO_DP[0]} <= set(names)  # picker.js: shared with salesbot.js
    assert png_size(logo) == LOGO_DP[1] == (174, 109) and len(logo) < 300 * 1024
    for texts in (ru, en):
        assert texts["dp"]["title"] and all(texts["dp"][code] for code in dp["settings"])
    assert widget_check(out.read_bytes()) == []


@pytest.mark.parametrize("change,expected", [
    (lambda m: m["dp"].update(action_multiple=True), "dp.action_multiple must be false"),
    (lambda m: m["dp"].pop("action_multiple"), "dp.action_multiple must be false"),
    (lambda m: m["dp"].update(webhook_url="https://elsewhere.example.com/amocrm/pipeline"),
     "dp.webhook_url must be https://sms.example.com/amocrm/pipeline"),
    (lambda m: m["dp"].update(webhook_url="http://sms.example.com/amocrm/pipeline"), "dp.webhook_url must be an https"),
    (lambda m: m["dp"].pop("webhook_url"), "dp.webhook_url is required"),
    (lambda m: m["dp"]["settings"].pop("key"), "dp.settings.key is required"),
    (lambda m: m["dp"]["settings"]["key"].update(required=False), "dp.settings.key is required"),
    (lambda m: [m["dp"]["settings"].pop(c) for c in ("message", "template_id")], "dp.settings needs message or"),
    (lambda m: m["dp"]["settings"]["message"].update(type="colour"), "dp.settings.message needs a name"),
    (lambda m: m.pop("dp"), "the digital_pipeline location needs a dp block"),
    (lambda m: m["locations"].remove("digital_pipeline"), "a dp block needs the digital_pipeline location"),
])
def test_a_dp_block_smsgate_cannot_serve_is_refused(src, tmp_path, change, expected):  # noqa: F811
    edit_json(src / "manifest.json", change)
    refused(src, tmp_path, f"manifest.json: {expected}")


def test_the_action_needs_its_logo_at_its_size(src, tmp_path):  # noqa: F811
    (src / LOGO_DP[0]).unlink()
    refused(src, tmp_path, "images/logo_dp.png: is missing (174x109 PNG required)")
    (src / LOGO_DP[0]).write_bytes(png(174, 110))
    refused(src, tmp_path, "images/logo_dp.png: is 174x110")


def test_the_actions_settings_need_their_names_in_every_language(src, tmp_path):  # noqa: F811
    edit_json(src / "i18n" / "en.json", lambda t: t["dp"].pop("key"))
    edit_json(src / "i18n" / "ru.json", lambda t: t["dp"].pop("key"))
    refused(src, tmp_path, "has no text for 'dp.key'")


def test_pipeline_js_follows_the_marketplace_rules_too(src, tmp_path):  # noqa: F811
    path = src / "pipeline.js"
    path.write_text(path.read_text().replace("console.debug(", "console.log("))
    refused(src, tmp_path, "pipeline.js: only console.debug may be used")
    path.write_text("window.pipeline = {};\n")
    refused(src, tmp_path, "pipeline.js: must be an AMD module")
