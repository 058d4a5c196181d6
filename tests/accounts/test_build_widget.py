"""`manage.py build_widget`: the archive amoCRM accepts, and every reason it would refuse one."""

import io
import json
import re
import shutil
import struct
import zipfile
import zlib
from datetime import date
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from accounts.widget_archive import LOGOS, TOUR_IMAGE_SIZE, png_size, widget_build, widget_check

SOURCE = Path(settings.BASE_DIR) / "widget_src"
BASE = "https://sms.example.com"


@pytest.fixture
def src(tmp_path):
    """A copy of widget_src to break."""
    copy = tmp_path / "src"
    shutil.copytree(SOURCE, copy)
    return copy


def build(source, tmp_path, base_url=BASE, **options):
    out = tmp_path / "widget.zip"
    stdout = io.StringIO()
    call_command("build_widget", base_url=base_url, source=str(source), out=str(out), stdout=stdout, **options)
    return out


def refused(source, tmp_path, expected, base_url=BASE):
    with pytest.raises(CommandError) as error:
        build(source, tmp_path, base_url=base_url)
    assert expected in str(error.value), str(error.value)
    assert not (tmp_path / "widget.zip").exists()
    return str(error.value)


def edit_json(path: Path, change):
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width, height, *, extra=b"") -> bytes:
    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    row = b"\x00" + b"\x80" * (width * 3)
    return b"\x89PNG\r\n\x1a\n" + ihdr + extra + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b"")


def rezip(archive: bytes, transform) -> bytes:
    """The same archive with each (name, data) passed through transform (None drops the file)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            result = transform(info.filename, src.read(info))
            if result is not None:
                dst.writestr(result[0], result[1])
    return out.getvalue()


# --- the real widget ---------------------------------------------------------------------------------
def test_the_widget_builds_with_the_endpoint_filled_in(tmp_path):
    out = build(SOURCE, tmp_path)
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
        script = archive.read("script.js").decode()
    assert manifest["sms"]["endpoint"] == "https://sms.example.com/amocrm/sms"
    assert manifest["widget"]["support"]["email"] == "support@sms.example.com"
    assert "var BASE_URL = 'https://sms.example.com';" in script
    assert {"manifest.json", "script.js", "i18n/ru.json", "i18n/en.json", *LOGOS} <= set(names)
    assert all("/" not in n or n.split("/")[0] in ("i18n", "images") for n in names)
    assert "README.md" not in names
    assert widget_check(out.read_bytes()) == []
    call_command("build_widget", check=str(out), stdout=io.StringIO())


def test_builds_are_reproducible(tmp_path):
    first = build(SOURCE, tmp_path).read_bytes()
    assert build(SOURCE, tmp_path).read_bytes() == first


def test_committed_images_have_their_exact_sizes_and_are_small():
    manifest = json.loads((SOURCE / "manifest.json").read_text())
    tours = [p.lstrip("/") for images in manifest["tour"]["tour_images"].values() for p in images]
    for name, size in [*LOGOS.items(), *[(t, TOUR_IMAGE_SIZE) for t in tours]]:
        data = (SOURCE / name).read_bytes()
        assert png_size(data) == size, name
        assert len(data) <= 300 * 1024, name


def test_i18n_files_have_identical_keys_and_no_bom():
    def keys(tree, prefix=""):
        return {prefix + k for k in tree} | {p for k, v in tree.items() if isinstance(v, dict)
                                             for p in keys(v, prefix + k + ".")}
    raw = {lang: (SOURCE / "i18n" / f"{lang}.json").read_bytes() for lang in ("ru", "en")}
    assert not any(data.startswith(b"\xef\xbb\xbf") or b"\r" in data for data in raw.values())
    trees = {lang: json.loads(data) for lang, data in raw.items()}
    assert keys(trees["ru"]) == keys(trees["en"])


def test_a_widget_zipped_from_source_without_building_is_refused(tmp_path):
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        for path in SOURCE.rglob("*"):
            if path.is_file() and path.name != "README.md":
                zf.write(path, path.relative_to(SOURCE).as_posix())
    problems = widget_check(archive.getvalue())
    assert any("placeholder" in p and p.startswith("manifest.json") for p in problems)
    assert any("placeholder" in p and p.startswith("script.js") for p in problems)
    assert any("widget.version is not set" in p for p in problems)


# --- every violation exits non-zero with a clear message ---------------------------------------------------
def test_a_folder_at_the_archive_root_is_refused(tmp_path):
    good = build(SOURCE, tmp_path).read_bytes()
    wrapped = tmp_path / "wrapped.zip"
    wrapped.write_bytes(rezip(good, lambda name, data: ("widget/" + name, data)))
    with pytest.raises(CommandError, match="inside the folder 'widget': zip the widget's files, not a folder"):
        call_command("build_widget", check=str(wrapped), stdout=io.StringIO())


def test_not_a_zip_is_refused(tmp_path):
    bogus = tmp_path / "bogus.zip"
    bogus.write_bytes(b"PK not really")
    with pytest.raises(CommandError, match="not a zip archive"):
        call_command("build_widget", check=str(bogus), stdout=io.StringIO())


@pytest.mark.parametrize("name", ["manifest.json", "i18n/en.json"])
def test_a_bom_is_refused(src, tmp_path, name):
    path = src / name
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    refused(src, tmp_path, f"{name}: starts with a UTF-8 BOM")


def test_json_that_is_not_utf8_is_refused(src, tmp_path):
    path = src / "i18n" / "ru.json"
    path.write_bytes(path.read_text(encoding="utf-8").encode("cp1251"))
    refused(src, tmp_path, "i18n/ru.json: is not UTF-8")


def test_invalid_json_is_refused(src, tmp_path):
    (src / "manifest.json").write_text('{"widget": {,}\n')
    refused(src, tmp_path, "manifest.json: is not valid JSON")


@pytest.mark.parametrize("name", ["manifest.json", "script.js", "i18n/ru.json", "style.css"])
def test_crlf_line_endings_are_refused(src, tmp_path, name):
    path = src / name
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    refused(src, tmp_path, f"{name}: has CR (Windows or old Mac) line endings; use LF only")


def test_i18n_key_parity_is_required(src, tmp_path):
    edit_json(src / "i18n" / "en.json", lambda d: d["settings_page"].pop("save"))
    refused(src, tmp_path, "i18n/en.json: keys differ from i18n/ru.json (missing ['settings_page.save']")


def test_an_i18n_file_per_locale_is_required(src, tmp_path):
    (src / "i18n" / "en.json").unlink()
    refused(src, tmp_path, "i18n/en.json: is missing (widget.locale lists 'en')")


def test_manifest_texts_must_exist_in_i18n(src, tmp_path):
    edit_json(src / "manifest.json", lambda d: d["widget"].update(name="widget.title"))
    refused(src, tmp_path, "i18n/ru.json: has no text for 'widget.title'")


@pytest.mark.parametrize("field", ["name", "description", "short_description", "version", "interface_version",
                                   "init_once", "locale", "installation", "support"])
def test_required_widget_fields(src, tmp_path, field):
    edit_json(src / "manifest.json", lambda d: d["widget"].pop(field))
    message = refused(src, tmp_path, "manifest.json: widget.")
    assert f"widget.{field}" in message


def test_the_tour_is_required(src, tmp_path):
    edit_json(src / "manifest.json", lambda d: d["tour"].update(is_tour=False))
    refused(src, tmp_path, "manifest.json: tour.is_tour must be true")
    edit_json(src / "manifest.json", lambda d: d.pop("tour"))
    refused(src, tmp_path, "manifest.json: the `tour` block is required")


def test_tour_images_for_each_locale(src, tmp_path):
    edit_json(src / "manifest.json", lambda d: d["tour"]["tour_images"].pop("en"))
    refused(src, tmp_path, "manifest.json: tour.tour_images.en is required")


def test_the_sms_location_needs_an_endpoint(src, tmp_path):
    edit_json(src / "manifest.json", lambda d: d.pop("sms"))
    refused(src, tmp_path, "the `sms` location needs sms.endpoint")


def test_unknown_locations_are_refused(src, tmp_path):
    edit_json(src / "manifest.json", lambda d: d["locations"].append("somewhere"))
    refused(src, tmp_path, "manifest.json: unknown locations ['somewhere']")


@pytest.mark.parametrize("name", sorted(LOGOS))
def test_each_logo_must_have_its_exact_size(src, tmp_path, name):
    (src / name).write_bytes(png(LOGOS[name][0] + 1, LOGOS[name][1]))
    refused(src, tmp_path, f"{name}: is {LOGOS[name][0] + 1}x{LOGOS[name][1]}; it must be exactly")


def test_tour_images_must_be_1188x616(src, tmp_path):
    (src / "images" / "tour_2_en.png").write_bytes(png(1200, 616))
    refused(src, tmp_path, "images/tour_2_en.png: is 1200x616; it must be exactly 1188x616")


def test_images_over_300_kb_are_refused(src, tmp_path):
    filler = chunk(b"tEXt", b"Comment\x00" + b"x" * (310 * 1024))
    (src / "images" / "logo.png").write_bytes(png(130, 100, extra=filler))
    refused(src, tmp_path, "images/logo.png: is 310 KB; images must be at most 300 KB")


def test_a_missing_image_is_refused(src, tmp_path):
    (src / "images" / "logo_small.png").unlink()
    refused(src, tmp_path, "images/logo_small.png: is missing (108x108 PNG required)")


def test_an_image_that_is_not_png_is_refused(src, tmp_path):
    (src / "images" / "logo_min.png").write_bytes(b"GIF89a" + b"\x00" * 100)
    refused(src, tmp_path, "images/logo_min.png: is not a PNG image")


def test_animated_images_are_refused(src, tmp_path):
    (src / "images" / "logo_min.png").write_bytes(png(84, 84, extra=chunk(b"acTL", struct.pack(">II", 2, 0))))
    refused(src, tmp_path, "images/logo_min.png: is animated")


def test_unused_files_are_refused(src, tmp_path):
    (src / "images" / "old_logo.png").write_bytes(png(10, 10))
    refused(src, tmp_path, "images/old_logo.png: is not used by the widget")


@pytest.mark.parametrize("code, reason", [
    ("eval('1');", "eval() is not allowed"),
    ("alert('hi');", "alert() is not allowed"),
    ("if (confirm('sure?')) {}", "confirm() is not allowed"),
    ("console.log('x');", "only console.debug may be used"),
    ("console.error('x');", "only console.debug may be used"),
    ("document.createElement('script');", "scripts must be loaded through define([...]), not a <script> element"),
])
def test_forbidden_code_in_script_js(src, tmp_path, code, reason):
    path = src / "script.js"
    path.write_text(path.read_text().replace("'use strict';", "'use strict';\n  " + code, 1))
    refused(src, tmp_path, f"script.js: {reason}")


def test_script_js_must_be_an_amd_module(src, tmp_path):
    (src / "script.js").write_text("window.widget = {};\n")
    refused(src, tmp_path, "script.js: must be an AMD module")


@pytest.mark.parametrize("base_url, message", [
    ("http://sms.example.com", "must start with https://"),
    ("sms.example.com", "must start with https://"),
    ("https://sms.example.com/?x=1", "without query"),
    ("https://:80", "without query"),
])
def test_a_bad_base_url_is_refused(tmp_path, base_url, message):
    refused(SOURCE, tmp_path, message, base_url=base_url)


def test_local_http_is_allowed_for_tests(tmp_path):
    out = build(SOURCE, tmp_path, base_url="http://127.0.0.1:8000")
    with zipfile.ZipFile(out) as archive:
        assert json.loads(archive.read("manifest.json"))["sms"]["endpoint"] == "http://127.0.0.1:8000/amocrm/sms"


def test_base_url_is_required(tmp_path):
    with pytest.raises(CommandError, match="--base-url is required"):
        call_command("build_widget", out=str(tmp_path / "w.zip"), stdout=io.StringIO())


# --- the support link and the version ------------------------------------------------------------------
def manifest_of(archive: Path | bytes) -> dict:
    data = archive.read_bytes() if isinstance(archive, Path) else archive
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        return json.loads(zf.read("manifest.json"))


def with_manifest(archive: bytes, change) -> bytes:
    def transform(name, data):
        if name == "manifest.json":
            manifest = json.loads(data)
            change(manifest)
            data = json.dumps(manifest, ensure_ascii=False, indent=2).encode() + b"\n"
        return name, data
    return rezip(archive, transform)


def check_refuses(tmp_path, archive: bytes, expected: str):
    path = tmp_path / "other.zip"
    path.write_bytes(archive)
    with pytest.raises(CommandError) as error:
        call_command("build_widget", check=str(path), stdout=io.StringIO())
    assert expected in str(error.value), str(error.value)


@pytest.mark.parametrize("base_url, link", [
    ("https://sms.example.com", "https://sms.example.com/help/"),
    ("https://example.com/sms/", "https://example.com/sms/help/"),  # a deployment under a path
])
def test_the_support_link_is_the_deployments_help_page(tmp_path, base_url, link):
    manifest = manifest_of(build(SOURCE, tmp_path, base_url=base_url))
    assert manifest["widget"]["support"]["link"] == link
    assert "/api/docs" not in json.dumps(manifest)


def test_a_support_link_elsewhere_is_refused(src, tmp_path):
    edit_json(src / "manifest.json", lambda d: d["widget"]["support"].update(link="{{SMSGATE_BASE_URL}}/api/docs/"))
    refused(src, tmp_path, "widget.support.link must be the deployment's help page https://sms.example.com/help/, "
                           "not 'https://sms.example.com/api/docs/'")
    edit_json(src / "manifest.json", lambda d: d["widget"]["support"].pop("link"))
    refused(src, tmp_path, "widget.support.link is required: the help page https://sms.example.com/help/")


def test_check_refuses_an_archive_without_the_help_page_link(tmp_path):
    good = build(SOURCE, tmp_path).read_bytes()
    check_refuses(tmp_path, with_manifest(good, lambda m: m["widget"]["support"].update(
        link="https://sms.example.com/api/docs/")), "must be the deployment's help page https://sms.example.com/help/")
    check_refuses(tmp_path, with_manifest(good, lambda m: m["widget"]["support"].pop("link")),
                  "widget.support.link is required")


def test_every_build_sets_a_version_from_the_date_and_the_content(src, tmp_path):
    version = manifest_of(build(SOURCE, tmp_path))["widget"]["version"]
    today = date.today()
    assert re.fullmatch(rf"{today.year}\.{today.month}\.{today.day}-[0-9a-f]{{8}}", version), version
    assert manifest_of(build(SOURCE, tmp_path))["widget"]["version"] == version  # same content, same version
    # Any change of what goes into the archive is a new version: a file, the deployment's URL.
    assert manifest_of(build(SOURCE, tmp_path, base_url="https://other.example.com"))["widget"]["version"] != version
    (src / "style.css").write_text((src / "style.css").read_text() + "\n/* changed */\n")
    changed = manifest_of(build(src, tmp_path))["widget"]["version"]
    assert changed != version and changed.split("-")[0] == version.split("-")[0]


def test_the_default_version_is_the_build_date_and_a_content_hash():
    first = widget_build(source=SOURCE, base_url=BASE, support_email="s@example.com", today=date(2026, 1, 5))
    again = widget_build(source=SOURCE, base_url=BASE, support_email="s@example.com", today=date(2026, 1, 5))
    other = widget_build(source=SOURCE, base_url=BASE, support_email="t@example.com", today=date(2026, 1, 5))
    assert re.fullmatch(r"2026\.1\.5-[0-9a-f]{8}", first.version)
    assert again.archive == first.archive
    assert other.version != first.version
    assert manifest_of(first.archive)["widget"]["version"] == first.version


def test_a_version_can_be_given(tmp_path):
    out = build(SOURCE, tmp_path, widget_version="2.1.0")
    assert manifest_of(out)["widget"]["version"] == "2.1.0"
    call_command("build_widget", check=str(out), stdout=io.StringIO())


@pytest.mark.parametrize("version", ["2.1 beta", "", "../x", "1.0/2", "v" * 65, "{{SMSGATE_WIDGET_VERSION}}"])
def test_a_bad_version_is_refused(tmp_path, version):
    with pytest.raises(CommandError, match="--widget-version"):
        build(SOURCE, tmp_path, widget_version=version)
    assert not (tmp_path / "widget.zip").exists()


def test_check_refuses_an_archive_whose_version_is_not_set(tmp_path):
    good = build(SOURCE, tmp_path).read_bytes()
    check_refuses(tmp_path, with_manifest(good, lambda m: m["widget"].update(version="{{SMSGATE_WIDGET_VERSION}}")),
                  "widget.version is not set; build_widget sets it")
    check_refuses(tmp_path, with_manifest(good, lambda m: m["widget"].update(version="1.0 final")),
                  "widget.version '1.0 final' must be")
    check_refuses(tmp_path, with_manifest(good, lambda m: m["widget"].pop("version")), "widget.version is required")


def test_the_support_email_comes_from_the_settings_when_set(tmp_path, settings):
    settings.SMSGATE_SUPPORT_EMAIL = "help@sms.example.com"
    assert manifest_of(build(SOURCE, tmp_path))["widget"]["support"]["email"] == "help@sms.example.com"
    out = build(SOURCE, tmp_path, support_email="desk@example.org")
    assert manifest_of(out)["widget"]["support"]["email"] == "desk@example.org"


def test_the_support_link_answers_with_the_help_page(tmp_path, client):
    link = manifest_of(build(SOURCE, tmp_path))["widget"]["support"]["link"]
    response = client.get(link.removeprefix(BASE), HTTP_ACCEPT_LANGUAGE="en")
    assert response.status_code == 200 and b"How to connect an SMS provider" in response.content


# --- the card locations and the modules script.js loads (issue 15) ----------------------------------------------
def test_the_card_panel_is_packed_and_its_locations_are_in_the_manifest(tmp_path):
    with zipfile.ZipFile(build(SOURCE, tmp_path)) as archive:
        names = archive.namelist()
        manifest = json.loads(archive.read("manifest.json"))
        card = archive.read("card.js").decode()
        langs = {lang: json.loads(archive.read(f"i18n/{lang}.json")) for lang in ("ru", "en")}
    assert "card.js" in names
    assert {"lcard-1", "ccard-1"} <= set(manifest["locations"])
    assert "define(['jquery']" in card
    # Every text the panel asks for exists in both languages.
    asked = set(re.findall(r"\bt\('([a-z0-9_]+)'\s*[,)]", card))
    asked |= {f"phone_{kind}" for kind in ("MOB", "WORK", "WORKDD", "HOME", "FAX", "OTHER")}
    asked |= {f"encoding_{encoding}" for encoding in ("gsm7", "ucs2")}
    for lang, tree in langs.items():
        assert asked <= set(tree["card"]), (lang, sorted(asked - set(tree["card"])))
        assert all(isinstance(text, str) and text for text in tree["card"].values())


def test_card_locations_without_the_panel_are_refused(src, tmp_path):
    (src / "card.js").unlink()
    problems = refused(src, tmp_path, "'lcard-1' is listed but card.js, which draws the card panel, is not in the archive")
    assert "'ccard-1' is listed but card.js" in problems


def test_the_panel_needs_both_card_locations_in_the_right_column(src, tmp_path):
    edit_json(src / "manifest.json", lambda d: d.update(locations=["lcard-0", "settings", "sms"]))
    problems = refused(src, tmp_path, "'lcard-0' keeps the widget out of the card's right column")
    assert "locations needs 'ccard-1'" in problems


def test_a_location_listed_twice_is_refused(src, tmp_path):
    edit_json(src / "manifest.json", lambda d: d["locations"].append("lcard-0"))
    refused(src, tmp_path, "locations lists 'lcard' twice ('lcard-1' and 'lcard-0')")


@pytest.mark.parametrize("location", ["lcard-2", "settings-1", "sms-0"])
def test_a_suffix_where_amocrm_reads_none_is_refused(src, tmp_path, location):
    edit_json(src / "manifest.json", lambda d: d["locations"].append(location))
    refused(src, tmp_path, f"unknown locations ['{location}']")


def test_script_js_must_load_the_panel(src, tmp_path):
    path = src / "script.js"
    path.write_text(path.read_text().replace("'/card.js", "'/panel.js"))
    problems = refused(src, tmp_path, "script.js: does not load card.js")
    assert "card.js: is not used by the widget" in problems


@pytest.mark.parametrize("code, reason", [
    ("eval('1');", "eval() is not allowed"),
    ("console.log('x');", "only console.debug may be used"),
    ("document.createElement('script');", "scripts must be loaded through define([...]), not a <script> element"),
])
def test_the_marketplace_rules_apply_to_card_js(src, tmp_path, code, reason):
    path = src / "card.js"
    path.write_text(path.read_text().replace("'use strict';", "'use strict';\n  " + code, 1))
    refused(src, tmp_path, f"card.js: {reason}")


def test_card_js_must_be_an_amd_module(src, tmp_path):
    (src / "card.js").write_text("window.card = {};\n")
    refused(src, tmp_path, "card.js: must be an AMD module")


def test_an_i18n_group_the_scripts_read_must_exist(src, tmp_path):
    for lang in ("ru", "en"):
        edit_json(src / "i18n" / f"{lang}.json", lambda d: d.pop("card"))
    problems = refused(src, tmp_path, "i18n/ru.json: has no 'card' texts, which card.js reads (i18n('card')).")
    assert "i18n/en.json: has no 'card' texts" in problems


def test_a_module_script_js_does_not_load_is_unused(src, tmp_path):
    (src / "extra.js").write_text("define([], function () { return {}; });\n")
    refused(src, tmp_path, "extra.js: is not used by the widget")
