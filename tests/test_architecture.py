"""The structure docs/architecture.md promises, checked on the code: imports run one way, no
function-local import dodges a cycle, status changes have one writer."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# Each app may import only the apps to its left (and smsgate, the infrastructure).
ORDER = ["smsgate", "accounts", "routes", "deliveries", "crm"]
# smsgate wires the apps together in these modules only.
WIRING = {"smsgate/urls.py", "smsgate/api_urls.py"}
# gunicorn reads its config before Django is set up, so its hooks import our code when they run.
CONFIG_FILES = {"smsgate/gunicorn.conf.py"}
# Models whose `status` is a record of what was reported, not a delivery's state.
STATUS_RECORDS = {"StatusEvent", "UnmatchedReport"}


def python_files(app: str):
    for path in sorted((ROOT / app).rglob("*.py")):
        if "migrations" not in path.parts:
            yield path


def imported_apps(tree: ast.AST) -> list[tuple[str, int, bool]]:
    """(top-level package, line, inside a function) of every absolute import."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            nested = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[0], child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], child.lineno, in_function))
            visit(child, nested)

    visit(tree, False)
    return found


@pytest.mark.parametrize("app", ORDER)
def test_imports_run_one_way(app):
    allowed = set(ORDER[:ORDER.index(app)]) | {app}
    wrong = []
    for path in python_files(app):
        relative = str(path.relative_to(ROOT))
        if relative in WIRING:
            continue
        for package, line, _in_function in imported_apps(ast.parse(path.read_text())):
            if package in ORDER and package not in allowed:
                wrong.append(f"{relative}:{line} imports {package}")
    assert wrong == []


@pytest.mark.parametrize("app", ORDER)
def test_no_function_local_import_of_our_own_code(app):
    """A function-local import of our own modules would be dodging a cycle; only an AppConfig.ready
    may import a module for its side effect (registering system checks)."""
    local = []
    for path in python_files(app):
        if str(path.relative_to(ROOT)) in CONFIG_FILES:
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name == "ready":
                continue
            for inner in ast.walk(node):
                ours = (isinstance(inner, ast.ImportFrom) and (inner.level > 0 or (inner.module or "").split(".")[0]
                                                               in ORDER)) or \
                       (isinstance(inner, ast.Import) and any(a.name.split(".")[0] in ORDER for a in inner.names))
                if ours:
                    local.append(f"{path.relative_to(ROOT)}:{inner.lineno}")
    assert local == []


def test_only_the_status_owner_writes_a_delivery_status():
    """No `.update(status=...)`, `.create(status=...)` or `bulk_update(..., ["status"])` outside
    deliveries/services/status.py (a new delivery gets its first status from intake's one INSERT)."""
    writers = []
    for app in ORDER:
        for path in python_files(app):
            relative = str(path.relative_to(ROOT))
            if relative == "deliveries/services/status.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                    continue
                if ast.unparse(node.func).split(".")[0] in STATUS_RECORDS:
                    continue
                keywords = {k.arg for k in node.keywords}
                if node.func.attr in ("update", "create", "update_or_create") and "status" in keywords:
                    writers.append(f"{relative}:{node.lineno}")
                if node.func.attr == "bulk_update" and "status" in ast.unparse(node):
                    writers.append(f"{relative}:{node.lineno}")
    assert writers == []
