"""The package's shape: its modules import each other without a cycle."""

import ast
import re
from pathlib import Path

import jsqa_sb

PACKAGE = Path(jsqa_sb.__file__).parent


def _imports() -> dict[str, set[str]]:
    """Module name -> the jsqa_sb modules it imports (at any depth of its code)."""
    modules = {
        ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        for path in PACKAGE.rglob("*.py")
    }
    graph = {}
    for name in modules:
        path = PACKAGE.parent.joinpath(*name.split("."))
        path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        found = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            found |= {n for n in names if n in modules and n != name}
        graph[name] = found
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle of ``graph`` (a list of modules), or [] if there is none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) == []


def test_no_import_cycle_between_the_package_modules():
    graph = _imports()
    assert "jsqa_sb.cli" in graph and "jsqa_sb.demo" in graph["jsqa_sb.cli"]
    assert _cycle(graph) == []


#: The package's jobs in pipeline order (README "Layout"): a module imports only from
#: its own job or a lower one. A job is a sub-package or a top-level module; a new
#: top-level module must be given its job here.
LAYERS = (
    "common errors audio",
    "data",
    "networks",
    "evaluation",
    "training recipe",
    "__init__ serving",
    "demo",
    "cli cli_parser",
)


def _job(module: str) -> str:
    """``jsqa_sb.data.pairs`` -> ``data``; the package itself -> ``__init__``."""
    return (module.split(".") + ["__init__"])[1]


def test_every_module_imports_only_from_its_job_or_lower_ones():
    level = {name: n for n, names in enumerate(LAYERS) for name in names.split()}
    graph = _imports()
    assert sorted(m for m in graph if _job(m) not in level) == []  # every module has a job
    upward = [
        f"{m} -> {d}" for m, deps in graph.items() for d in deps if level[_job(d)] > level[_job(m)]
    ]
    assert upward == []
    assert level[_job("jsqa_sb.serving.inference")] > level[_job("jsqa_sb.data.pairs")]


def test_the_old_flat_module_names_import_the_moved_modules():
    import importlib

    for old, new in jsqa_sb.MOVED.items():
        assert importlib.import_module(old) is importlib.import_module(new), old
    from jsqa_sb import models

    assert models.JSQAEncoder.__module__ == "jsqa_sb.networks.encoder"
    assert models.__spec__.name == "jsqa_sb.networks"  # the alias leaves the module's own spec
    flat = {p.stem for p in PACKAGE.glob("*.py")}
    assert flat == {"__init__", "common", "errors", "audio", "cli", "cli_parser"}


def test_the_readme_layout_names_every_module():
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Layout", 1)[1].split("\n## ", 1)[0]
    named = {n.removesuffix(".py") for n in re.findall(r"`([\w.]+)/?`", layout)}
    stems = {p.stem for p in PACKAGE.rglob("*.py") if p.stem != "__init__"}
    jobs = {p.parent.name for p in PACKAGE.rglob("__init__.py") if p.parent != PACKAGE}
    assert sorted((stems | jobs) - named) == []
