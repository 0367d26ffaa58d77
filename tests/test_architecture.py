"""The dependency rule of docs/architecture.md, checked on the package's own imports."""

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "wavepose_jax"


def _is_main_block(node: ast.AST) -> bool:
    """`if __name__ == "__main__":` -- a command-line entry point, never run on import."""
    return isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and \
        isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__" and \
        any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators)


def _imports() -> dict[str, set[str]]:
    """Module name (relative to the package, dotted) -> package modules it imports (a module's
    `if __name__ == "__main__":` block is not imported with it and may hand over to a command)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
        modules[name.removesuffix(".__init__").removesuffix("__init__")] = path
    graph = {}
    for name, path in modules.items():
        found = set()
        body = [n for n in ast.parse(path.read_text()).body if not _is_main_block(n)]
        for node in (n for top in body for n in ast.walk(top)):
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


def test_the_graph_was_read():
    assert {"run", "sampler", "pipeline", "models.wavellm", "data.clip"} <= set(GRAPH)
    assert "models.phi3" in GRAPH["models.wavellm"] and "run" in GRAPH["evaluate"]
    # Imports inside functions count; a `__main__` block handing over to a command does not.
    assert "data.synthetic" in GRAPH["clips"] and "clips" not in GRAPH["data.synthetic"]


def test_no_import_cycles():
    done, active = set(), []

    def visit(module):
        if module in active:
            pytest.fail("import cycle: " + " -> ".join(active[active.index(module):] + [module]))
        if module in done:
            return
        active.append(module)
        for dep in GRAPH[module]:
            visit(dep)
        active.pop()
        done.add(module)

    for module in GRAPH:
        visit(module)


@pytest.mark.parametrize("package, allowed", [
    ("data.", ("data.",)),
    ("models.", ("models.", "data.", "sharding")),
    ("training.", ("training.", "models.", "data.", "sharding", "files", "cli",
                   "base_record")),
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


def test_every_module_has_a_row_in_the_map():
    """docs/architecture.md's module table names every module of the package."""
    doc = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    rows = {line.split("`")[1] for line in doc.splitlines()
            if line.startswith("| ") and line.count("`") >= 2}
    packages = {name.rsplit(".", 1)[0] for name in GRAPH if "." in name}
    missing = [name for name in GRAPH if name and name not in packages
               and not name.startswith("configs") and name.replace(".", "/") + ".py" not in rows]
    assert not missing, f"modules without a row in docs/architecture.md: {missing}"
