"""The import rule of docs/architecture.md, checked on the source: surfaces -> services and
selectors -> runtime -> pure core, never back up, no cycles, and no Django in the pure core.

Every import counts, at module level or inside a function: a function-level import that
dodges a cycle is still the cycle.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("accounts", "api", "executions", "explorer", "expressions", "machines",
            "workflow_site")

# Layers from the bottom up; a module may import its own layer and the ones below it.
PURE, MODELS, RUNTIME, SERVICES, SURFACE, SITE = range(6)
LAYER_NAMES = ["pure core", "models", "runtime", "services and selectors", "surface", "site"]

# Most specific prefix wins.
LAYERS = {
    "expressions": PURE,
    "executions.engine": PURE,
    "executions.joins": PURE,
    "machines.definition": PURE,
    "machines.contracts": PURE,
    "machines.language": PURE,
    "machines.diagrams": PURE,
    "machines.diffs": PURE,
    "machines.lru": PURE,
    "machines.words": PURE,
    "machines.schedules": PURE,
    "machines.durations": PURE,
    "executions.steps": PURE,
    "executions.runtime.pool_child": PURE,  # the evaluation pool's child: pure code only
    "machines.models": MODELS,
    "executions.models": MODELS,
    "executions.runtime": RUNTIME,
    "executions.tasks": RUNTIME,  # the queue's entry points into the runtime
    "executions.services": SERVICES,
    "executions.selectors": SERVICES,
    "executions.filters": SERVICES,
    "executions.operations": SERVICES,
    "executions.migrating": SERVICES,
    "machines.services": SERVICES,
    "machines.selectors": SERVICES,
    "accounts.roles": SERVICES,
    "accounts.services": SERVICES,
    "accounts.timezones": SERVICES,
    "api": SURFACE,
    "executions.api": SURFACE,
    "machines.api": SURFACE,
    "accounts.api_permissions": SURFACE,
    "accounts.management": SURFACE,
    "executions.management": SURFACE,
    "machines.management": SURFACE,
    "machines.admin": SURFACE,
    "executions.admin": SURFACE,
    "machines.forms": SURFACE,
    "explorer": SURFACE,
    "workflow_site": SITE,
    # Wiring: each app's ready() plugs the runtime's store in and registers its API errors;
    # migrations create the role groups.
    "accounts.apps": SITE,
    "executions.apps": SITE,
    "machines.apps": SITE,
    "explorer.apps": SITE,
    "accounts.migrations": SITE,
    "executions.migrations": SITE,
    "machines.migrations": SITE,
}
# Surfaces that name a model or the runtime by design, and why.
SURFACE_EXCEPTIONS = {
    # The admin and DRF's ModelSerializer describe a model: naming it is their interface.
    ("machines.admin", "machines.models"),
    ("executions.admin", "executions.models"),
    ("executions.api.serializers", "executions.models"),
    ("machines.api.serializers", "machines.models"),
    # The timer loop is a worker process's entry point, like executions.tasks.
    ("executions.management.commands.run_timers", "executions.runtime"),
    ("executions.management.commands.run_timers", "executions.runtime.timers"),
    ("executions.management.commands.run_timers", "executions.runtime.schedules"),
}
# Third-party packages the pure core may use (Django and DRF are not among them).
PURE_THIRD_PARTY = {"yaml", "graphviz", "cronsim", "jsonschema"}
PROJECT_TOP = set(PACKAGES)


def layer_of(module: str) -> int | None:
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        found = LAYERS.get(".".join(parts[:end]))
        if found is not None:
            return found
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def imports_of(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, resolved to absolute names."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((base, node.lineno))
            # `from executions import services` imports the submodule services.
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names]
    return found


MODULES = project_modules()


def known(name: str) -> str | None:
    """The project module an imported name refers to (the longest match), if any."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in MODULES:
            return candidate
    return None


def edges() -> dict[str, set[str]]:
    graph = {}
    for module, path in MODULES.items():
        targets = set()
        for name, _ in imports_of(module, path):
            target = known(name)
            if target and target != module and not module.startswith(f"{target}."):
                targets.add(target)
        graph[module] = targets
    return graph


def test_every_project_module_has_a_layer():
    unplaced = [m for m in MODULES if layer_of(m) is None and m not in PACKAGES]
    assert not unplaced, f"modules with no layer in this test's LAYERS: {unplaced}"


def test_imports_only_go_down():
    wrong = []
    for module, path in MODULES.items():
        own = layer_of(module)
        if own is None:
            continue
        for name, line in imports_of(module, path):
            target = known(name)
            if target is None or target in PACKAGES:
                continue
            theirs = layer_of(target)
            if theirs is not None and theirs > own:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {LAYER_NAMES[own]} "
                             f"imports {target} ({LAYER_NAMES[theirs]})")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_surfaces_never_touch_models_or_the_runtime():
    wrong = []
    for module, path in MODULES.items():
        if layer_of(module) != SURFACE:
            continue
        for name, line in imports_of(module, path):
            target = known(name)
            if target and layer_of(target) in (MODELS, RUNTIME) \
                    and (module, target) not in SURFACE_EXCEPTIONS:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {module} imports {target}")
    assert not wrong, "surfaces must go through services and selectors:\n" + "\n".join(wrong)


def test_the_pure_core_imports_no_django():
    wrong = []
    for module, path in MODULES.items():
        if layer_of(module) != PURE:
            continue
        for name, line in imports_of(module, path):
            top = name.split(".")[0]
            if top in PROJECT_TOP:
                target = known(name)
                if target and layer_of(target) not in (PURE, None):
                    wrong.append(f"{path.relative_to(ROOT)}:{line}: {name}")
            elif top in {"django", "rest_framework", "django_q", "httpx", "psycopg"}:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {name}")
            elif top not in PURE_THIRD_PARTY and not _stdlib(top):
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {name} (third party)")
    assert not wrong, "the pure core must not import these:\n" + "\n".join(wrong)


def _stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names or name == "__future__"


def test_no_import_cycles():
    graph = edges()
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


@pytest.mark.parametrize("source, expected", [
    ("from executions.models import Execution", ["executions.models"]),
    ("from executions import services", ["executions.services"]),
])
def test_the_checker_sees_what_a_surface_imports(source, expected, tmp_path):
    """The rule would pass vacuously if imports were not recognised: check it sees them."""
    path = tmp_path / "views.py"
    path.write_text(source + "\n")
    seen = {known(name) for name, _ in imports_of("explorer.views", path)} - {None}
    assert set(expected) <= seen
