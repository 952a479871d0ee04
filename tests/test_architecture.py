"""The house rules: only zoidberg/ui imports Streamlit, no import cycles, one-way layers, TensorFlow-free configuration."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKAGE = REPO_ROOT / "zoidberg"

# What a layer may import from Zoidberg, by module prefix (docs/ARCHITECTURE.md draws them).
# A module matches its longest prefix; anything not listed may import any engine module
# but never zoidberg.ui or zoidberg.cli.
ALLOWED_IMPORTS = {
    "zoidberg.options.registry": (),
    "zoidberg.runs.files": (),
    "zoidberg.runs.liveness": ("zoidberg.runs.files",),
    "zoidberg.runs.store": ("zoidberg.runs.files", "zoidberg.runs.liveness"),
    "zoidberg.runs.progress": (),
    "zoidberg.evaluation.metrics": (),
    "zoidberg.evaluation.curves": ("zoidberg.evaluation.metrics",),
    "zoidberg.evaluation.significance": ("zoidberg.evaluation.metrics",),
    "zoidberg.versions": (),
    "zoidberg.data": ("zoidberg.data",),
    "zoidberg.config": ("zoidberg.options.registry",),
    "zoidberg.models": ("zoidberg.models", "zoidberg.config", "zoidberg.options"),
    "zoidberg.models.site_heads": (),
    "zoidberg.evaluation.site_figures": ("zoidberg.evaluation.statistics",),
    "zoidberg.adaptation.config": ("zoidberg.config",),
    "zoidberg.runs.worker": ("zoidberg.config", "zoidberg.data", "zoidberg.runs.store", "zoidberg.runs.progress"),
}
# The engine's layers, bottom first (docs/ARCHITECTURE.md draws them). A package, or a loose
# module, imports only from its own layer or a layer below it, counting imports inside functions.
LAYERS = (
    "zoidberg", "versions", "options", "config", "data", "runs", "models", "evaluation", "inference", "integrations",
    "training", "tuning", "adaptation", "monitoring", "reporting", "serving", "launch", "cli", "__main__", "ui",
)
# Only these may import the dashboard and the command line.
UI_IMPORTERS = ("zoidberg.ui",)
CLI_IMPORTERS = ("zoidberg.__main__", "zoidberg.cli")


def module_name(path: Path) -> str:
    """zoidberg/runs/store.py -> zoidberg.runs.store; a package's __init__.py -> the package."""
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def engine_modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """Every zoidberg module a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from zoidberg.runs import progress" imports the module zoidberg.runs.progress.
            names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules and name != "zoidberg")
    return found - {module_name(path)}


def import_graph() -> dict[str, set[str]]:
    """Every module's zoidberg imports, package faces (__init__.py) included."""
    modules = engine_modules()
    return {name: imported_modules(path, modules) for name, path in modules.items() if name != "zoidberg"}


def layer_of(module: str) -> str:
    """zoidberg.runs.store -> runs; zoidberg.config -> config; zoidberg -> zoidberg."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """The imports that run from a layer to one above it, or to a package with no layer."""
    offenders = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            source, destination = layer_of(module), layer_of(target)
            if source not in LAYERS or destination not in LAYERS:
                offenders.append(f"{module} -> {target} (give {source if source not in LAYERS else destination} a layer)")
            elif LAYERS.index(destination) > LAYERS.index(source):
                offenders.append(f"{module} -> {target} ({source} sits below {destination})")
    return offenders


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), plus self-imports."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_there_is_no_import_cycle_among_zoidberg_modules():
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_package_imports_only_from_its_layer_or_below():
    assert upward_imports(import_graph()) == []


def test_the_layer_check_finds_an_upward_import_and_a_package_without_a_layer():
    graph = {"zoidberg.training.cv": {"zoidberg.launch.warm", "zoidberg.inference.gate"}, "zoidberg.attic.box": {"zoidberg.config"}}
    assert upward_imports(graph) == [
        "zoidberg.attic.box -> zoidberg.config (give attic a layer)",
        "zoidberg.training.cv -> zoidberg.launch.warm (training sits below launch)",
    ]


def test_the_kinds_table_names_functions_that_exist_below_launch():
    # launch.kinds imports each kind's engine functions by "module:name" when it runs them, so the
    # import graph does not see those edges: this checks them instead.
    from zoidberg.launch.kinds import KINDS

    for kind in KINDS.values():
        for path in (kind.config_class, kind.prepare_function, kind.run_function):
            module, _, name = path.partition(":")
            assert LAYERS.index(layer_of(module)) < LAYERS.index("launch"), path
            assert callable(getattr(importlib.import_module(module), name)), path


def test_layers_import_only_downwards():
    offenders = []
    for module, targets in import_graph().items():
        prefix = max((key for key in ALLOWED_IMPORTS if module == key or module.startswith(key + ".")), key=len, default=None)
        for target in targets:
            if prefix is not None and not any(target == allowed or target.startswith(allowed + ".") for allowed in ALLOWED_IMPORTS[prefix]):
                offenders.append(f"{module} -> {target}")
            if target.startswith("zoidberg.ui") and not module.startswith(UI_IMPORTERS):
                offenders.append(f"{module} -> {target} (only zoidberg.ui imports the dashboard)")
            if target.startswith("zoidberg.cli") and not module.startswith(CLI_IMPORTERS):
                offenders.append(f"{module} -> {target} (only python -m zoidberg imports the CLI)")
    assert offenders == []


def test_configuration_registry_tuning_space_and_cli_import_without_tensorflow():
    code = (
        "import sys, zoidberg.config, zoidberg.options.registry, zoidberg.models.build, zoidberg.tuning.space, "
        "zoidberg.tuning.config, zoidberg.tuning.results, zoidberg.launch.jobs, zoidberg.cli; "
        "zoidberg.cli.build_parser(); zoidberg.tuning.space.resolve_search_space('cnn', {}, 64); "
        "print(sorted(name for name in ('tensorflow', 'keras', 'keras_tuner', 'streamlit') if name in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == "[]"


def test_a_plain_install_never_imports_ray():
    # The training and tuning modules, the Ray engine's own module and the CLI all load
    # without Ray: only choosing engine ray imports it.
    code = (
        "import sys, zoidberg.cli, zoidberg.training.cv, zoidberg.training.ray_engine, zoidberg.tuning.search, "
        "zoidberg.tuning.ray_trials, zoidberg.launch.jobs, zoidberg.launch.warm; zoidberg.cli.build_parser(); "
        "print('ray' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip().splitlines()[-1] == "False"


def test_import_zoidberg_pulls_in_no_streamlit():
    code = (
        "import sys, zoidberg, zoidberg.cli, zoidberg.training.cv, zoidberg.data.dataset, zoidberg.launch.jobs, "
        "zoidberg.inference.loading, zoidberg.inference.batch, zoidberg.inference.export, zoidberg.models.build, zoidberg.evaluation.compare;"
        "print('streamlit' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True)
    assert result.stdout.strip() == "False"


def test_no_streamlit_import_outside_ui():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if "ui" in path.relative_to(PACKAGE).parts[:1]:
            continue
        for line in path.read_text().splitlines():
            stripped = line.strip()
            if stripped.startswith(("import streamlit", "from streamlit")):
                offenders.append(str(path))
    assert offenders == []


def test_pages_are_thin():
    for page in (REPO_ROOT / "pages").glob("*.py"):
        assert len(page.read_text().splitlines()) <= 80, f"{page.name} holds more than drawing: move it to zoidberg/ui"


def test_every_registry_architecture_has_a_builder():
    from zoidberg.models.build import FEATURE_BUILDERS
    from zoidberg.options.registry import ARCHITECTURES

    assert set(FEATURE_BUILDERS) == set(ARCHITECTURES)


def test_upload_limit_in_streamlit_config_matches_the_engine():
    import tomllib

    from zoidberg.data.imaging import MAX_UPLOAD_BYTES

    config = tomllib.loads((REPO_ROOT / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] * 1024 * 1024 == MAX_UPLOAD_BYTES


def test_no_source_file_is_hidden_by_gitignore():
    """A clean clone must hold every module: an ignore rule that matches source (``runs/`` once hid zoidberg/runs/) breaks CI only."""
    if not (REPO_ROOT / ".git").exists():
        return
    sources = [str(path.relative_to(REPO_ROOT)) for folder in ("zoidberg", "tests", "pages", "benchmarks") for path in (REPO_ROOT / folder).rglob("*.py")]
    sources += ["streamlit_app.py"]
    result = subprocess.run(["git", "check-ignore", "--no-index", *sources], cwd=REPO_ROOT, capture_output=True, text=True)
    assert result.stdout.split() == [], f"ignored by .gitignore but needed by a clean clone: {result.stdout.split()}"
