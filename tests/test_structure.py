"""The layering the README's Layout section describes: each package imports only downward
(cnnkit -> serving -> export -> keras_cnns), none of the project's modules import each other in a circle,
and the REST server runs without gRPC."""
import ast
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ("keras_cnns", "export", "serving", "cnnkit")  # each may import those before it


def _modules():
    for package in LAYERS:
        for folder, _, names in os.walk(os.path.join(ROOT, package)):
            for name in names:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".").removesuffix(".__init__")
                    yield module, path


def _imports(path, top_level_only):
    """The modules a file imports (at module level only, or anywhere): ``from package import module`` names
    the module, ``from module import name`` the module."""
    tree = ast.parse(open(path, encoding="utf-8").read())
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                yield name if name in MODULES else node.module


MODULES = dict(_modules())


def test_each_package_imports_only_the_layers_below_it():
    upward = []
    for module, path in MODULES.items():
        rank = LAYERS.index(module.split(".")[0])
        for name in _imports(path, top_level_only=False):
            top = name.split(".")[0]
            if top in LAYERS and LAYERS.index(top) > rank:
                upward.append(f"{module} imports {name}")
    assert not upward


def test_no_module_level_import_circle():
    graph = {m: {n for n in _imports(p, top_level_only=True) if n in MODULES and n != m} for m, p in MODULES.items()}
    state, circles = {}, []

    def visit(m, path):
        state[m] = "open"
        for n in graph[m]:
            if state.get(n) == "open":
                circles.append(" -> ".join(path[path.index(n):] + [n]))
            elif n not in state:
                visit(n, path + [n])
        state[m] = "done"

    for m in graph:
        if m not in state:
            visit(m, [m])
    assert not circles


def test_the_rest_server_and_the_local_runner_import_no_grpc_and_the_client_no_tensorflow():
    code = ("import sys; import serving.rest, export.local; assert 'grpc' not in sys.modules, 'grpc'; "
            "import serving.client")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    code = "import sys; import serving.client; assert 'tensorflow' not in sys.modules"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
