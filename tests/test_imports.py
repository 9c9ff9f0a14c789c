"""The house: no import circle among the library's modules, each module imports alone, the report is a leaf.

An import counts wherever it is written (module level or inside a function):
a circle held apart by a lazy import is still a circle of roles.
"""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "datamodels"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports (a package's __init__ re-exporting its own
    modules, and a module importing its parent package, are not edges)."""
    mods = {module_name(p, root): p for p in root.rglob("*.py")}
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        is_pkg = p.name == "__init__.py"
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = m.split(".") if is_pkg else m.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and not (is_pkg and t.startswith(m + ".")) and not m.startswith(t + "."):
                    edges[m].add(t)
    return edges


def import_circles(root: Path) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    edges = import_graph(root)
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def test_the_library_has_no_import_circle():
    circles = import_circles(PACKAGE)
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_check_finds_a_circle_held_apart_by_a_lazy_import(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .a import f\n")  # re-exporting its own module: no edge
    (pkg / "a.py").write_text("from .sub.b import g\n\ndef f():\n    return g()\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "b.py").write_text("def g():\n    from ..a import f  # lazy, still a circle\n    return f\n")
    (pkg / "c.py").write_text("from . import a\n")
    assert import_circles(pkg) == [["pkg.a", "pkg.sub.b"]]
    (pkg / "sub" / "b.py").write_text("def g():\n    return 1\n")
    assert import_circles(pkg) == []


def test_the_report_is_a_leaf():
    """Nothing in the library imports the report; only the command line does."""
    edges = import_graph(PACKAGE)
    importers = sorted(m for m, ts in edges.items()
                       if not m.startswith("datamodels.report") and any(t.startswith("datamodels.report") for t in ts))
    assert importers == ["datamodels.cli"]


# Third-party packages are imported once in the parent; each library module is then
# imported in a forked child that has none of the library loaded: an order-dependent
# import (a module that works only after another was imported) fails there.
ALONE = textwrap.dedent("""
    import importlib, os, sys, traceback
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    for third in ("numpy", "scipy.stats", "sklearn.linear_model", "torch", "zarr", "tqdm.auto", "matplotlib"):
        importlib.import_module(third)
    failed = []
    for mod in sys.argv[1:]:
        pid = os.fork()
        if pid == 0:
            try:
                importlib.import_module(mod)
            except BaseException:
                traceback.print_exc()
                os._exit(1)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            failed.append(mod)
    print("FAILED", " ".join(failed))
    sys.exit(1 if failed else 0)
""")


@pytest.mark.skipif(sys.platform == "win32", reason="uses os.fork")
def test_each_module_imports_alone_in_a_fresh_interpreter():
    mods = sorted(import_graph(PACKAGE))
    assert len(mods) > 40
    res = subprocess.run([sys.executable, "-c", ALONE, *mods], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-6000:]


def test_warnings_from_our_code_are_errors_and_others_are_not():
    """pyproject's filterwarnings: "error:::datamodels" (a warning located in a datamodels module)."""
    import warnings

    with pytest.raises(UserWarning, match="ours"):
        warnings.warn_explicit("ours", UserWarning, "datamodels/evaluate/lds.py", 1, module="datamodels.evaluate.lds")
    warnings.warn_explicit("theirs", UserWarning, "numpy/core.py", 1, module="numpy.core")  # only reported
