"""The package's shape, checked: the layer order (a module imports only from its own layer
or the ones below), modules that import alone, no import circles, short files and short
functions (docs/ARCHITECTURE.md describes the layers)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fcnjax"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
# A function may be longer where its docstring says why, with these words.
LONG_BECAUSE = "is long because"


# From the bottom; a module belongs to the first layer one of whose prefixes names it or
# its package. Keep in step with docs/ARCHITECTURE.md.
LAYERS = (
    ("conventions", ("fcnjax.labels", "fcnjax.typing", "fcnjax.download")),
    ("ops", ("fcnjax.ops",)),
    ("layers", ("fcnjax.layers",)),
    ("models", ("fcnjax.models",)),
    ("objectives and inference", ("fcnjax.losses", "fcnjax.metrics", "fcnjax.inference")),
    ("data", ("fcnjax.data",)),
    ("weights", ("fcnjax.weights",)),
    ("pictures and logs", ("fcnjax.plots", "fcnjax.viz", "fcnjax.metrics_log")),
    ("training", ("fcnjax.training",)),
    ("configuration", ("fcnjax.config", "fcnjax.configs")),
    (
        "faces",
        (
            "fcnjax.prediction_files",
            "fcnjax.train",
            "fcnjax.predict",
            "fcnjax.export",
            "fcnjax.colab",
        ),
    ),
    ("command line", ("fcnjax.catalog", "fcnjax.cli", "fcnjax.__main__")),
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    for path in sorted((ROOT / "configs").glob("*.py")):  # shipped as fcnjax.configs
        name = "fcnjax.configs" + ("" if path.stem == "__init__" else f".{path.stem}")
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """The fcnjax modules that ``name`` imports, at module level or inside functions."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            for alias in node.names:  # `from fcnjax import data` imports fcnjax.data
                sub = f"{base}.{alias.name}"
                found.add(sub if sub in MODULES else base)
    return {m for m in found if m in MODULES and m != name and m != "fcnjax"}


def _cycles(graph: dict[str, set[str]]) -> list[str]:
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    return cycles


def test_no_module_imports_one_that_imports_it_back():
    graph = {name: _imports(name, path) for name, path in MODULES.items()}
    assert graph["fcnjax.train"] >= {"fcnjax.training.steps", "fcnjax.training.experiment"}
    assert graph["fcnjax.data"] >= {"fcnjax.data.core"}
    cycles = _cycles(graph)
    assert not cycles, "import circles:\n" + "\n".join(cycles)


def _layer(name: str) -> int:
    """The index of ``name``'s layer in LAYERS; -1 for none."""
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if name == prefix or name.startswith(f"{prefix}.") or name.startswith(f"{prefix}_"):
                return i
    return -1


def test_every_module_has_a_layer():
    unplaced = [n for n in MODULES if n != "fcnjax" and _layer(n) < 0]
    assert not unplaced, f"modules in no layer (add them to LAYERS and ARCHITECTURE.md): {unplaced}"


def test_no_module_imports_a_higher_layer():
    climbs = []
    for name, path in MODULES.items():
        if name == "fcnjax":  # the package's face imports the user-facing modules
            continue
        for imported in sorted(_imports(name, path)):
            if _layer(imported) > _layer(name):
                mine, theirs = LAYERS[_layer(name)][0], LAYERS[_layer(imported)][0]
                climbs.append(f"{name} ({mine}) imports {imported} ({theirs})")
    assert not climbs, "imports of a higher layer:\n" + "\n".join(climbs)


def test_the_layer_checker_sees_a_climb():
    assert _layer("fcnjax.ops._conv") < _layer("fcnjax.models.fcn") < _layer("fcnjax.training.loop")
    assert _layer("fcnjax.export_onnx") == _layer("fcnjax.export")  # export_onnx: export's part
    assert _layer("fcnjax.configs.shapes_fcn8s") == _layer("fcnjax.config")
    assert _layer("fcnjax.nothing") == -1


def test_only_the_experiment_reads_a_config_in_training():
    # Below fcnjax.config the config is read once, by training.experiment.build, into typed
    # parts: no other training module handles a ConfigDict.
    def imports_ml_collections(path: Path) -> bool:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[0] == "ml_collections" for n in names):
                return True
        return False

    training = {n: p for n, p in MODULES.items() if n.startswith("fcnjax.training")}
    assert len(training) >= 10
    assert [n for n, p in training.items() if imports_ml_collections(p)] == []
    assert imports_ml_collections(MODULES["fcnjax.config"])  # the check sees an import


def test_the_checker_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}
    assert _cycles(graph) == ["a -> b -> c -> a"]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_every_module_imports_alone():
    # In one interpreter, with fcnjax's modules forgotten before each: an import that works
    # only after another module was imported first fails here.
    names = [n for n in MODULES if not n.endswith("__main__")]
    script = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m.split('.')[0] == 'fcnjax']:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        "print('ok', len(" + repr(names) + "))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.startswith("ok")


@pytest.mark.parametrize("name", sorted(MODULES))
def test_file_is_short(name):
    lines = MODULES[name].read_text().count("\n")
    assert lines <= MAX_FILE_LINES, f"{MODULES[name]} has {lines} lines (> {MAX_FILE_LINES})"


def _code_lines(node: ast.AST, source: list[str]) -> int:
    """Lines of code of a function: no blank lines, comments or docstring."""
    doc = ast.get_docstring(node, clean=False)
    skip = set()
    body = node.body
    if doc is not None and isinstance(body[0], ast.Expr):
        skip = set(range(body[0].lineno, body[0].end_lineno + 1))
    count = 0
    for i in range(node.lineno, node.end_lineno + 1):
        text = source[i - 1].strip()
        if i not in skip and text and not text.startswith("#"):
            count += 1
    return count


def test_functions_are_short():
    long = []
    for path in MODULES.values():
        source = path.read_text().splitlines()
        for node in ast.walk(ast.parse("\n".join(source))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = _code_lines(node, source)
                if n > MAX_FUNCTION_LINES and LONG_BECAUSE not in (ast.get_docstring(node) or ""):
                    long.append(
                        f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name}: {n}"
                    )
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines of code:\n" + "\n".join(long)
