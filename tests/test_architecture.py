"""The dependency rule of docs/architecture.md, checked on the package's own imports."""

import ast
import pathlib
import re

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "wavepose_jax"
DOC = PACKAGE.parent / "docs" / "architecture.md"


def _imports() -> dict[str, set[str]]:
    """Module name (relative to the package, dotted) -> package modules it imports, anywhere in
    it: at the top, inside functions and in an `if __name__ == "__main__":` block alike."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        modules[name.removesuffix(".__init__").removesuffix("__init__")] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("wavepose_jax"):
                base = node.module.removeprefix("wavepose_jax").lstrip(".")
                targets = [f"{base}.{a.name}".lstrip(".") for a in node.names]
                targets = [t if t in modules else base for t in targets]
            elif isinstance(node, ast.Import):
                targets = [a.name.removeprefix("wavepose_jax").lstrip(".") for a in node.names
                           if a.name.startswith("wavepose_jax")]
            found |= {t for t in targets if t in modules and t and t != name}
        graph[name] = found
    return graph


GRAPH = _imports()


def _floors() -> dict[str, int]:
    """A module's floor: 0 without package imports, else one more than its highest import."""
    floors: dict[str, int] = {}

    def floor(module: str, active: tuple[str, ...] = ()) -> int:
        if module in active:
            pytest.fail("import cycle: " + " -> ".join(active[active.index(module):] + (module,)))
        if module not in floors:
            floors[module] = 1 + max((floor(d, active + (module,)) for d in GRAPH[module]),
                                     default=-1)
        return floors[module]

    for module in GRAPH:
        floor(module)
    return floors


def _closure(module: str) -> set[str]:
    seen, todo = set(), [module]
    while todo:
        for dep in GRAPH[todo.pop()] - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_the_graph_was_read():
    assert {"run", "sampler", "inputs", "dataset", "models.wavellm", "data.clip"} <= set(GRAPH)
    assert "models.phi3" in GRAPH["models.wavellm"] and "run" in GRAPH["evaluate"]
    # Imports inside functions count; the generators never import their command line.
    assert "data.synthetic" in GRAPH["clips"] and "clips" not in GRAPH["data.synthetic"]


def test_no_import_cycles():
    assert _floors()  # fails naming the cycle


@pytest.mark.parametrize("package, allowed", [
    ("data.", ("data.",)),
    ("models.", ("models.", "data.", "sharding")),
    # training/aot.py is a command line: it makes the run's spec of its --config.
    ("training.", ("training.", "models.", "data.", "sharding", "files", "cli", "base_record",
                   "spec")),
])
def test_lower_packages_never_import_upwards(package, allowed):
    for module, deps in GRAPH.items():
        if module.startswith(package):
            bad = sorted(d for d in deps if not d.startswith(allowed))
            assert not bad, f"{module} imports {bad}"


def test_loading_code_imports_models_never_the_reverse():
    loaders = {"hf", "peft_io", "run"}
    for module, deps in GRAPH.items():
        if module.startswith("models."):
            assert not deps & loaders, module
    assert "models.wavellm" in GRAPH["run"]


def test_inference_never_imports_the_training_data():
    for module in ("infer", "sampler", "inputs", "feedback", "report"):
        assert "dataset" not in _closure(module) | {module}, module


def test_models_and_data_never_read_the_run_settings():
    """Models get a model spec, data code explicit values: no `config.train`, no lookups with
    a fallback (`config.get(...)`)."""
    for path in [*PACKAGE.glob("models/*.py"), *PACKAGE.glob("data/*.py")]:
        source = path.read_text()
        assert "config.train" not in source, path
        assert not re.search(r"\bconfig\w*(\.\w+)*\.get\(", source), path


def _doc_rows() -> dict[str, str]:
    """docs/architecture.md's module table: module path -> the floor it states."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 3 and cells[1].startswith("`"):
            rows[cells[1].strip("`")] = cells[0]
    return rows


def test_every_module_has_a_row_in_the_map_with_its_floor():
    """docs/architecture.md's module table names every module of the package, each with the
    floor its imports give it (computed here, so the map cannot go stale)."""
    rows = _doc_rows()
    floors = _floors()
    packages = {name.rsplit(".", 1)[0] for name in GRAPH if "." in name}
    modules = [name for name in GRAPH if name and name not in packages
               and not name.startswith("configs")]
    missing = [name for name in modules if name.replace(".", "/") + ".py" not in rows]
    assert not missing, f"modules without a row in docs/architecture.md: {missing}"
    wrong = {name: (rows[name.replace(".", "/") + ".py"], floors[name]) for name in modules
             if rows[name.replace(".", "/") + ".py"] != str(floors[name])}
    assert not wrong, f"floors in docs/architecture.md (stated, computed): {wrong}"


def test_no_module_over_500_lines():
    """One job per module: a module grows past 500 lines only for a reason (the Flax Phi-3,
    numerically transformers', is one model in one file)."""
    long = {str(p.relative_to(PACKAGE)): n for p in PACKAGE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500 and p.name != "phi3.py"}
    assert not long, long
