"""Build `widget.zip` from `widget_src/` and check it the way amoCRM's upload does
(amocrm-platform.md §3): files at the archive root, UTF-8 JSON without BOM, LF line endings,
identical i18n keys, images at their exact sizes and under 300 KB, the required manifest fields,
the locations (a card panel in the right column: `lcard-1`, `ccard-1`, drawn by card.js), and the
marketplace rules for script.js and every module it loads (`card.js` ...: AMD, loaded by script.js,
the i18n groups they read present in every language). The build also fills in the deployment's help page as the
support link and a version that changes with the archive's content (amoCRM caches a widget's files
by its version, so a re-upload under the same version would be served stale).
"""

import fnmatch
import hashlib
import io
import json
import re
import struct
import zipfile
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

PLACEHOLDER_BASE_URL = "{{SMSGATE_BASE_URL}}"
PLACEHOLDER_SUPPORT_EMAIL = "{{SMSGATE_SUPPORT_EMAIL}}"
PLACEHOLDER_VERSION = "{{SMSGATE_WIDGET_VERSION}}"
HELP_PATH = "/help/"  # the public help page (deliveries/help.py) under the base URL: widget.support.link
SMS_ENDPOINT_PATH = "/amocrm/sms"
DP_WEBHOOK_PATH = "/amocrm/pipeline"  # crm.views.pipeline_webhook: dp.webhook_url
# The pipeline action's settings (crm.pipeline_inbox): the account's key, and a template or a text.
DP_KEY_SETTING = "key"
DP_TEXT_SETTINGS = ("message", "template_id")
# Salesbot's "send SMS" step (crm.salesbot): the handler, its settings, and the module that draws and saves it.
SALESBOT_HANDLER = "send_sms"
SALESBOT_SETTINGS = ("text", "template_id")
SALESBOT_SETTING_TYPES = {"text", "numeric", "url"}
SALESBOT_MODULE = "salesbot.js"
LIST_LOCATIONS = ("llist", "clist")  # crm.lists: an SMS to the selected leads or contacts
LIST_MODULE = "listsend.js"
SETTING_TYPES = {"text", "pass", "users", "users_lp", "custom", "numeric", "textarea", "url"}
# A version goes into amoCRM's URLs of the widget's files: letters, digits and . _ + - only.
VERSION_PATTERN = re.compile(r"[0-9A-Za-z][0-9A-Za-z._+-]{0,63}")
MAX_IMAGE_BYTES = 300 * 1024
LOGOS = {
    "images/logo.png": (130, 100),
    "images/logo_main.png": (400, 272),
    "images/logo_medium.png": (240, 84),
    "images/logo_min.png": (84, 84),
    "images/logo_small.png": (108, 108),
}
LOGO_DP = ("images/logo_dp.png", (174, 109))
TOUR_IMAGE_SIZE = (1188, 616)
TEXT_SUFFIXES = (".json", ".js", ".css", ".twig")
KNOWN_LOCALES = {"ru", "en", "es", "pt"}
KNOWN_LOCATIONS = {
    "lcard", "ccard", "comcard", "cucard", "llist", "clist", "tlist", "culist", "settings", "advanced_settings",
    "card_sdk", "catalogs", "digital_pipeline", "lead_sources", "whatsapp_modal", "salesbot_designer", "sms",
    "mobile_card", "amoforms", "everywhere", "widget_page", "personal_page", "tline", "tcalendar",
}
# Marketplace rules for script.js: no eval, no alert/confirm, console.debug only (trace in catch).
FORBIDDEN_IN_SCRIPT = {
    r"\beval\s*\(": "eval() is not allowed",
    r"\bnew\s+Function\s*\(": "new Function() is not allowed",
    r"\balert\s*\(": "alert() is not allowed",
    r"\bconfirm\s*\(": "confirm() is not allowed",
    r"\bconsole\.(?:log|info|warn|error)\s*\(": "only console.debug may be used",
    r"createElement\(\s*['\"]script['\"]\s*\)": "scripts must be loaded through define([...]), not a <script> element",
}
# script.js is the entry point; each feature's own AMD module (figures.js, ...) sits beside it.
# Card and list locations take a suffix: -1 the widget uses the right column, -0 it does not (§3.3).
SUFFIXED_LOCATIONS = {"lcard", "ccard", "comcard", "cucard", "llist", "clist", "tlist", "culist"}
# The card panel (card.js) is drawn in the right column of the lead's and the contact's card.
CARD_MODULE = "card.js"
CARD_LOCATIONS = ("lcard-1", "ccard-1")
# script.js and the AMD modules it loads with require([params.path + '/<name>.js']), at the archive root.
SOURCE_PATTERNS = ("manifest.json", "*.js", "style.css", "i18n/*.json", "images/*.png", "images/*.jpg",
                   "images/*.jpeg", "images/*.gif", "templates/*.twig")


class WidgetError(Exception):
    """The archive would be refused; `problems` lists every reason, one sentence each."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class BuildResult:
    archive: bytes
    files: list[str]
    version: str


def base_url_check(base_url: str) -> str:
    """https://host[/prefix]; plain http only for this machine (local tests)."""
    try:
        parts = urlsplit(base_url)
        parts.port  # raises on a port that is not a number
    except ValueError:
        raise WidgetError([f"--base-url {base_url!r} is not a URL."]) from None
    local = parts.hostname in ("127.0.0.1", "localhost")
    if parts.scheme != "https" and not (parts.scheme == "http" and local):
        raise WidgetError([f"--base-url must start with https:// (amoCRM calls only https), got {base_url!r}."])
    if not parts.hostname or parts.query or parts.fragment or parts.username:
        raise WidgetError([f"--base-url must be scheme://host[/path] without query or credentials, got {base_url!r}."])
    return base_url.rstrip("/")


def source_files(source: Path) -> list[str]:
    found = set()
    for pattern in SOURCE_PATTERNS:
        found.update(p.relative_to(source).as_posix() for p in source.glob(pattern) if p.is_file())
    return sorted(found)


def widget_version_default(files: dict[str, bytes], *, today: date) -> str:
    """The build date and a hash of every file as it goes into the archive (but the version itself):
    a new version whenever a byte changes, the same one for the same content on the same day."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + files[name] + b"\0")
    return f"{today.year}.{today.month}.{today.day}-{digest.hexdigest()[:8]}"


def widget_build(*, source: Path, base_url: str, support_email: str, version: str | None = None,
                 today: date | None = None) -> BuildResult:
    """Fill in the deployment's URLs and the version, zip the widget's files at the archive root, and
    check it. Without `version`, the build date and a content hash (widget_version_default)."""
    base_url = base_url_check(base_url)
    names = source_files(source)
    files = {}
    for name in names:
        data = (source / name).read_bytes()
        if name.endswith(TEXT_SUFFIXES):
            data = data.replace(PLACEHOLDER_BASE_URL.encode(), base_url.encode())
            data = data.replace(PLACEHOLDER_SUPPORT_EMAIL.encode(), support_email.encode())
        files[name] = data
    if version is None:
        version = widget_version_default(files, today=today or date.today())
    if not VERSION_PATTERN.fullmatch(version):
        raise WidgetError([(f"--widget-version {version!r}: use up to 64 letters, digits and . _ + - "
                            "(it goes into amoCRM's URLs of the widget's files).")])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            data = files[name]
            if name.endswith(TEXT_SUFFIXES):
                data = data.replace(PLACEHOLDER_VERSION.encode(), version.encode())
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))  # reproducible archives
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    problems = widget_check(buffer.getvalue(), base_url=base_url)
    if problems:
        raise WidgetError(problems)
    return BuildResult(buffer.getvalue(), names, version)


# --- the checks ------------------------------------------------------------------------------------
def png_size(data: bytes) -> tuple[int, int] | None:
    if len(data) < 24 or data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", data[16:24])


def png_is_animated(data: bytes) -> bool:
    """APNG: an acTL chunk before the first IDAT."""
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        if kind == b"acTL":
            return True
        if kind == b"IDAT":
            return False
        position += 12 + length
    return False


def _read_json(name: str, data: bytes, problems: list[str]):
    if data.startswith(b"\xef\xbb\xbf"):
        problems.append(f"{name}: starts with a UTF-8 BOM; save it as UTF-8 without BOM.")
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{name}: is not UTF-8 (byte {exc.start}).")
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        problems.append(f"{name}: is not valid JSON ({exc}).")
        return None
    if not isinstance(value, dict):
        problems.append(f"{name}: must be a JSON object.")
        return None
    return value


def _key_paths(value, prefix="") -> set[str]:
    paths = set()
    if isinstance(value, dict):
        for key, child in value.items():
            path = f"{prefix}.{key}" if prefix else key
            paths.add(path)
            paths |= _key_paths(child, path)
    return paths


def _lookup(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def widget_check(archive: bytes, *, base_url: str | None = None) -> list[str]:
    """Every reason amoCRM would refuse this archive (an empty list when it is fine), and every way it
    would not serve owners well (no help page, no version). `base_url`: the deployment it was built
    for; without it, the one sms.endpoint names."""
    problems: list[str] = []
    try:
        zf = zipfile.ZipFile(io.BytesIO(archive))
        files = {info.filename: zf.read(info) for info in zf.infolist() if not info.is_dir()}
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        return [f"not a zip archive ({exc})."]

    if "manifest.json" not in files:
        roots = sorted({name.split("/", 1)[0] for name in files if name.endswith("/manifest.json")})
        if roots:
            return [f"manifest.json is inside the folder {roots[0]!r}: zip the widget's files, not a folder."]
        return ["manifest.json is missing at the archive root."]

    for name, data in files.items():
        if name.endswith(TEXT_SUFFIXES):
            if b"\r" in data:
                problems.append(f"{name}: has CR (Windows or old Mac) line endings; use LF only.")
            try:
                text = data.decode("utf-8-sig")
            except UnicodeDecodeError:
                if not name.endswith(".json"):
                    problems.append(f"{name}: is not UTF-8.")
                continue
            if "{{SMSGATE_" in text:
                problems.append(f"{name}: still holds a {{{{SMSGATE_...}}}} placeholder; build with build_widget.")
            if data.startswith(b"\xef\xbb\xbf") and not name.endswith(".json"):
                problems.append(f"{name}: starts with a UTF-8 BOM; save it as UTF-8 without BOM.")

    manifest = _read_json("manifest.json", files["manifest.json"], problems)
    if manifest is None:
        return problems
    problems += _check_manifest(manifest)
    problems += _check_support_link(manifest, base_url)
    problems += _check_dp(manifest, base_url)
    problems += _check_salesbot(manifest, files)
    problems += _check_lists(manifest, files)
    locales = manifest.get("widget", {}).get("locale") if isinstance(manifest.get("widget"), dict) else None
    locales = [loc for loc in locales if isinstance(loc, str)] if isinstance(locales, list) else []
    problems += _check_i18n(files, manifest, locales)
    problems += _check_images(files, manifest, locales)
    problems += _check_scripts(files)
    problems += _check_locations(manifest, files)
    problems += _check_i18n_groups(files, locales)

    expected_images = set(LOGOS) | set(_tour_images(manifest, locales).values())
    if "digital_pipeline" in (manifest.get("locations") or []):
        expected_images.add(LOGO_DP[0])
    for name in sorted(files):
        unused_image = name.startswith("images/") and name not in expected_images
        unknown = not any(fnmatch.fnmatchcase(name, p) for p in SOURCE_PATTERNS) or name.count("/") > 1
        unused_module = name in _modules(files) and name not in _loaded_modules(files)
        if unused_image or unknown or unused_module:
            problems.append(f"{name}: is not used by the widget; the archive must not carry unused files.")
    return problems


def _check_manifest(manifest: dict) -> list[str]:
    problems = []
    widget = manifest.get("widget")
    if not isinstance(widget, dict):
        return ["manifest.json: the `widget` block is missing."]
    for key in ("name", "description", "short_description", "version"):
        if not isinstance(widget.get(key), str) or not widget.get(key):
            problems.append(f"manifest.json: widget.{key} is required (a non-empty string).")
    version = widget.get("version")
    if isinstance(version, str) and "{{SMSGATE_" in version:
        problems.append("manifest.json: widget.version is not set; build_widget sets it (--widget-version, or "
                        "the build date and a content hash) so that amoCRM does not serve a re-upload from its cache.")
    elif isinstance(version, str) and version and not VERSION_PATTERN.fullmatch(version):
        problems.append(f"manifest.json: widget.version {version!r} must be up to 64 letters, digits and . _ + -.")
    if widget.get("interface_version") != 2:
        problems.append("manifest.json: widget.interface_version must be 2.")
    for key in ("init_once", "installation"):
        if not isinstance(widget.get(key), bool):
            problems.append(f"manifest.json: widget.{key} is required (true or false).")
    locales = widget.get("locale")
    if not isinstance(locales, list) or not locales or not all(isinstance(x, str) for x in locales):
        problems.append("manifest.json: widget.locale is required (a list such as [\"ru\", \"en\"]).")
    elif set(locales) - KNOWN_LOCALES:
        problems.append(f"manifest.json: widget.locale has unsupported languages {sorted(set(locales) - KNOWN_LOCALES)}.")
    support = widget.get("support")
    if not isinstance(support, dict) or not (support.get("link") or support.get("email")):
        problems.append("manifest.json: widget.support needs a link (or at least an email).")

    locations = manifest.get("locations")
    if not isinstance(locations, list) or not locations:
        problems.append("manifest.json: locations is required (a non-empty list).")
        locations = []
    unknown = [loc for loc in locations if not isinstance(loc, str) or _location_base(loc) not in KNOWN_LOCATIONS]
    if unknown:
        problems.append(f"manifest.json: unknown locations {unknown}.")
    if "sms" in locations:
        endpoint = (manifest.get("sms") or {}).get("endpoint") if isinstance(manifest.get("sms"), dict) else None
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        if not parts or not parts.hostname:
            problems.append("manifest.json: the `sms` location needs sms.endpoint (an absolute URL).")
        elif parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost"):
            problems.append("manifest.json: sms.endpoint must be an https URL.")

    tour = manifest.get("tour")
    if not isinstance(tour, dict):
        problems.append("manifest.json: the `tour` block is required.")
    else:
        if tour.get("is_tour") is not True:
            problems.append("manifest.json: tour.is_tour must be true.")
        if not isinstance(tour.get("tour_description"), str) or not tour.get("tour_description"):
            problems.append("manifest.json: tour.tour_description is required.")
        images = tour.get("tour_images")
        for locale in locales if isinstance(locales, list) else []:
            if not isinstance(images, dict) or not isinstance(images.get(locale), list) or not images.get(locale):
                problems.append(f"manifest.json: tour.tour_images.{locale} is required (a list of images).")
    return problems


def _deployment(manifest: dict, base_url: str | None) -> str | None:
    """The deployment the archive was built for: `base_url`, else the one sms.endpoint names."""
    if base_url is None:
        sms = manifest.get("sms") if isinstance(manifest.get("sms"), dict) else {}
        endpoint = sms.get("endpoint")
        if isinstance(endpoint, str) and endpoint.endswith(SMS_ENDPOINT_PATH):
            base_url = endpoint[: -len(SMS_ENDPOINT_PATH)]
    return base_url


def _check_dp(manifest: dict, base_url: str | None) -> list[str]:
    """The digital pipeline's "send SMS" action: its dp block (amocrm-platform.md §3.2) as smsgate's webhook
    reads it: once per lead entering a stage, the account's key, a template or a text."""
    if "digital_pipeline" not in (manifest.get("locations") or []):
        return ["manifest.json: a dp block needs the digital_pipeline location."] if "dp" in manifest else []
    dp = manifest.get("dp")
    if not isinstance(dp, dict):
        return ["manifest.json: the digital_pipeline location needs a dp block."]
    problems = []
    if dp.get("action_multiple") is not False:
        problems.append("manifest.json: dp.action_multiple must be false (an SMS once, when a lead enters the stage).")
    base_url = _deployment(manifest, base_url)
    url = dp.get("webhook_url")
    parts = urlsplit(url) if isinstance(url, str) else None
    if not parts or not parts.hostname:
        problems.append(f"manifest.json: dp.webhook_url is required (the deployment's {DP_WEBHOOK_PATH}).")
    elif "{{SMSGATE_" in url:
        pass  # reported with the other placeholders
    elif parts.scheme != "https" and parts.hostname not in ("127.0.0.1", "localhost"):
        problems.append("manifest.json: dp.webhook_url must be an https URL.")
    elif base_url and url != f"{base_url}{DP_WEBHOOK_PATH}":
        problems.append(f"manifest.json: dp.webhook_url must be {base_url}{DP_WEBHOOK_PATH}, not {url!r}.")
    settings = dp.get("settings")
    if not isinstance(settings, dict):
        return [*problems, "manifest.json: dp.settings is required (the action's key and its text or template)."]
    for code, spec in settings.items():
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or spec.get("type") not in SETTING_TYPES:
            problems.append(f"manifest.json: dp.settings.{code} needs a name (an i18n key) and a known type.")
    key = settings.get(DP_KEY_SETTING)
    if not isinstance(key, dict) or key.get("required") is not True:
        problems.append(f"manifest.json: dp.settings.{DP_KEY_SETTING} is required (the account's own key: amoCRM does "
                        "not sign the pipeline's webhook).")
    if not any(code in settings for code in DP_TEXT_SETTINGS):
        problems.append(f"manifest.json: dp.settings needs {' or '.join(DP_TEXT_SETTINGS)} (what the SMS says).")
    return problems


def _salesbot_handlers(manifest: dict) -> dict:
    block = manifest.get("salesbot_designer")
    if not isinstance(block, dict):
        return {}
    return {code: spec for code, spec in block.items() if code != "logo"}


def _check_salesbot(manifest: dict, files: dict) -> list[str]:
    """Salesbot's "send SMS" step: the salesbot_designer block (amocrm-platform.md §3.2: a logo and one object
    per handler, {name, settings: {code: {name, type: text|numeric|url}}}) and the module behind it."""
    block = manifest.get("salesbot_designer")
    if "salesbot_designer" not in (manifest.get("locations") or []):
        return ["manifest.json: a salesbot_designer block needs the salesbot_designer location."] \
            if block is not None else []
    if not isinstance(block, dict):
        return ["manifest.json: the salesbot_designer location needs a salesbot_designer block."]
    problems = []
    logo = block.get("logo")
    if not isinstance(logo, str) or not logo.startswith("/images/") or logo.lstrip("/") not in files:
        problems.append("manifest.json: salesbot_designer.logo must name an image of the widget (/images/...).")
    handlers = _salesbot_handlers(manifest)
    for code, spec in handlers.items():
        settings = spec.get("settings") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str) or not isinstance(settings, dict):
            problems.append(f"manifest.json: salesbot_designer.{code} needs a name (an i18n key) and settings.")
            continue
        for name, setting in settings.items():
            if (not isinstance(setting, dict) or not isinstance(setting.get("name"), str)
                    or setting.get("type") not in SALESBOT_SETTING_TYPES):
                problems.append(f"manifest.json: salesbot_designer.{code}.settings.{name} needs a name (an i18n key) "
                                f"and a type of {sorted(SALESBOT_SETTING_TYPES)}.")
    handler = handlers.get(SALESBOT_HANDLER)
    settings = handler.get("settings") if isinstance(handler, dict) else None
    if not isinstance(settings, dict) or any(name not in settings for name in SALESBOT_SETTINGS):
        problems.append(f"manifest.json: salesbot_designer.{SALESBOT_HANDLER} with the settings "
                        f"{', '.join(SALESBOT_SETTINGS)} is required (the step's text or template).")
    if SALESBOT_MODULE not in files:
        problems.append(f"{SALESBOT_MODULE}: is missing (it draws and saves the Salesbot step).")
    return problems


def _check_lists(manifest: dict, files: dict) -> list[str]:
    """Sending to the selected items of the leads and contacts lists: both locations, and the dialog's module."""
    locations = manifest.get("locations") or []
    wanted = [loc for loc in LIST_LOCATIONS if loc in locations]
    if not wanted:
        return []
    problems = []
    if LIST_MODULE not in files:
        problems.append(f"{LIST_MODULE}: is missing (the dialog of llist and clist).")
    return problems


def _check_support_link(manifest: dict, base_url: str | None) -> list[str]:
    """widget.support.link is this deployment's help page, which amoMarket shows on the widget's card."""
    widget = manifest.get("widget") if isinstance(manifest.get("widget"), dict) else {}
    support = widget.get("support") if isinstance(widget.get("support"), dict) else {}
    link = support.get("link")
    base_url = _deployment(manifest, base_url)
    expected = f"{base_url}{HELP_PATH}" if base_url else None
    if not isinstance(link, str) or not link:
        return [f"manifest.json: widget.support.link is required: the help page{f' {expected}' if expected else ''}."]
    if "{{SMSGATE_" in link:
        return []  # reported with the other placeholders
    if expected and link != expected:
        return [f"manifest.json: widget.support.link must be the deployment's help page {expected}, not {link!r}."]
    if not expected and urlsplit(link).scheme not in ("https", "http"):
        return [f"manifest.json: widget.support.link must be an https URL, not {link!r}."]
    return []


def _tour_images(manifest: dict, locales: list[str]) -> dict[str, str]:
    """{manifest path: archive name} of every tour image."""
    tour = manifest.get("tour") if isinstance(manifest.get("tour"), dict) else {}
    images = tour.get("tour_images") if isinstance(tour.get("tour_images"), dict) else {}
    result = {}
    for locale in locales:
        for path in images.get(locale) or []:
            if isinstance(path, str):
                result[path] = path.lstrip("/")
    return result


def _check_i18n(files: dict, manifest: dict, locales: list[str]) -> list[str]:
    problems = []
    trees = {}
    for locale in locales:
        name = f"i18n/{locale}.json"
        if name not in files:
            problems.append(f"{name}: is missing (widget.locale lists {locale!r}).")
            continue
        tree = _read_json(name, files[name], problems)
        if tree is not None:
            trees[locale] = tree
    if len(trees) > 1:
        reference_locale = next(iter(trees))
        reference = _key_paths(trees[reference_locale])
        for locale, tree in trees.items():
            keys = _key_paths(tree)
            if keys != reference:
                missing, extra = sorted(reference - keys), sorted(keys - reference)
                problems.append(f"i18n/{locale}.json: keys differ from i18n/{reference_locale}.json "
                                f"(missing {missing[:5]}, extra {extra[:5]}).")
    widget = manifest.get("widget") if isinstance(manifest.get("widget"), dict) else {}
    tour = manifest.get("tour") if isinstance(manifest.get("tour"), dict) else {}
    references = [widget.get(k) for k in ("name", "description", "short_description")] + [tour.get("tour_description")]
    dp = manifest.get("dp") if isinstance(manifest.get("dp"), dict) else {}
    dp_settings = dp.get("settings") if isinstance(dp.get("settings"), dict) else {}
    references += [dp.get("title")] + [spec.get("name") for spec in dp_settings.values() if isinstance(spec, dict)]
    for spec in _salesbot_handlers(manifest).values():
        if isinstance(spec, dict):
            settings = spec.get("settings") if isinstance(spec.get("settings"), dict) else {}
            references += [spec.get("name")] + [s.get("name") for s in settings.values() if isinstance(s, dict)]
    for locale, tree in trees.items():
        for key in references:
            if isinstance(key, str) and key and not isinstance(_lookup(tree, key), str):
                problems.append(f"i18n/{locale}.json: has no text for {key!r}, which manifest.json refers to.")
    return problems


def _check_images(files: dict, manifest: dict, locales: list[str]) -> list[str]:
    problems = []
    wanted = dict(LOGOS)
    if "digital_pipeline" in (manifest.get("locations") or []):
        wanted[LOGO_DP[0]] = LOGO_DP[1]
    for name in _tour_images(manifest, locales).values():
        wanted[name] = TOUR_IMAGE_SIZE
    for name, size in sorted(wanted.items()):
        data = files.get(name)
        if data is None:
            problems.append(f"{name}: is missing ({size[0]}x{size[1]} PNG required).")
            continue
        if len(data) > MAX_IMAGE_BYTES:
            problems.append(f"{name}: is {len(data) // 1024} KB; images must be at most 300 KB.")
        actual = png_size(data)
        if actual is None:
            problems.append(f"{name}: is not a PNG image.")
        elif actual != size:
            problems.append(f"{name}: is {actual[0]}x{actual[1]}; it must be exactly {size[0]}x{size[1]}.")
        elif png_is_animated(data):
            problems.append(f"{name}: is animated; images must be still.")
    return problems


def _code(data: bytes) -> str:
    """A JS file without its comments: the rules apply to code."""
    text = data.decode("utf-8", "replace")
    return re.sub(r"/\*.*?\*/|(?<![:'\"])//[^\n]*", "", text, flags=re.DOTALL)


def _modules(files: dict) -> list[str]:
    """The widget's JS files at the archive root other than script.js (card.js ...)."""
    return sorted(name for name in files if name.endswith(".js") and "/" not in name and name != "script.js")


def _loaded_modules(files: dict) -> set[str]:
    """The modules script.js loads: require([self.params.path + '/card.js' ...])."""
    script = files.get("script.js")
    code = _code(script) if script is not None else ""
    return {name for name in _modules(files) if re.search(r"['\"]/" + re.escape(name) + r"(?:['\"?#])", code)}


def _check_scripts(files: dict) -> list[str]:
    if files.get("script.js") is None:
        return ["script.js: is missing."]
    problems = []
    for name in ["script.js", *_modules(files)]:
        code = _code(files[name])
        if not re.search(r"\bdefine\s*\(", code):
            problems.append(f"{name}: must be an AMD module (define([...], function (...) {{...}})).")
        for pattern, reason in FORBIDDEN_IN_SCRIPT.items():
            if re.search(pattern, code):
                problems.append(f"{name}: {reason}.")
    return problems


def _location_base(location: str) -> str:
    base, _, suffix = location.rpartition("-")
    return base if base and suffix in ("0", "1") and base in SUFFIXED_LOCATIONS else location


def _check_locations(manifest: dict, files: dict) -> list[str]:
    """Suffixes only where amoCRM reads them, each area once, and the card panel where it is drawn: the
    right column of the lead's and the contact's card, with card.js to draw it."""
    locations = [loc for loc in manifest.get("locations") or [] if isinstance(loc, str)]
    problems = []
    seen: dict[str, str] = {}
    for location in locations:
        base = _location_base(location)
        if base in seen:
            problems.append(f"manifest.json: locations lists {base!r} twice ({seen[base]!r} and {location!r}).")
        seen[base] = location
    has_panel = CARD_MODULE in files
    for location in CARD_LOCATIONS:
        base = location.split("-")[0]
        listed = seen.get(base)
        if has_panel and listed is None:
            problems.append(f"manifest.json: {CARD_MODULE} draws the SMS panel of the lead's and the contact's "
                            f"card; locations needs {location!r}.")
        elif has_panel and listed != location and listed != base:  # lcard-0: no right column
            problems.append(f"manifest.json: {listed!r} keeps the widget out of the card's right column, where "
                            f"{CARD_MODULE} draws the SMS panel; use {location!r}.")
        elif listed is not None and not has_panel:
            problems.append(f"manifest.json: {listed!r} is listed but {CARD_MODULE}, which draws the card panel, "
                            "is not in the archive.")
    if has_panel and CARD_MODULE not in _loaded_modules(files):
        problems.append(f"script.js: does not load {CARD_MODULE} (require([self.params.path + '/{CARD_MODULE}'])), "
                        "so the card locations would show nothing.")
    return problems


def _check_i18n_groups(files: dict, locales: list[str]) -> list[str]:
    """Every group the scripts read with i18n('group') exists in every language."""
    wanted = set()
    for name in ["script.js", *_modules(files)]:
        if name in files:
            wanted |= {(name, group) for group in re.findall(r"\bi18n\(\s*['\"]([A-Za-z0-9_]+)['\"]\s*\)",
                                                               _code(files[name]))}
    problems = []
    for locale in locales:
        data = files.get(f"i18n/{locale}.json")
        try:
            tree = json.loads(data.decode("utf-8-sig")) if data is not None else None
        except ValueError:
            tree = None
        if not isinstance(tree, dict):
            continue  # reported by _check_i18n
        for name, group in sorted(wanted):
            if not isinstance(tree.get(group), dict):
                problems.append(f"i18n/{locale}.json: has no {group!r} texts, which {name} reads (i18n('{group}')).")
    return problems
