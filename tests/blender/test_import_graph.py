"""The add-on's modules import each other in one direction (issue 18, item 4): plain modules
(results, jobs, importer, state ...) import nothing of the UI, and no circle exists, counting
imports made inside functions too."""
import ast
from pathlib import Path

ADDON = Path(__file__).resolve().parents[2] / "blender_addon"
UI_MODULES = {"operators", "ui", "preferences", "properties", "overlay"}
PLAIN_MODULES = {"results", "jobs", "importer", "state", "backend", "backend_setup", "compat", "fbx_export",
                 "retarget"}


def addon_imports() -> dict:
    """module name -> the add-on modules it imports (relative imports anywhere in the file)."""
    graph = {}
    for path in ADDON.glob("*.py"):
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                found |= {node.module} if node.module else {alias.name for alias in node.names}
        graph[path.stem] = found - {path.stem}
    return graph


def test_no_import_circle():
    graph = addon_imports()
    done, visiting = set(), []

    def visit(module):
        assert module not in visiting, f"import circle: {' -> '.join(visiting[visiting.index(module):] + [module])}"
        if module in done:
            return
        visiting.append(module)
        for imported in sorted(graph.get(module, ())):
            visit(imported)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_plain_modules_import_nothing_of_the_ui():
    graph = addon_imports()
    for module in PLAIN_MODULES:
        assert not graph[module] & UI_MODULES, f"{module} imports {graph[module] & UI_MODULES}"
