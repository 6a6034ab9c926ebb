"""Imports point down: the layers of ``lib/`` (docs/architecture.md), checked on the source with ``ast``.

From the bottom up (a module belongs to the first group whose name is the module or a package
above it; ``lib`` itself only to ``base``):

0. base: ``lib``, ``lib.errors``, ``lib.constants``, ``lib.utils``, ``lib.config`` (config files and
   the one parse of a section into a settings record): no project imports but these.
1. geometry: ``lib.geometry`` (camera and box maths, the ``Calibration`` record),
   ``lib.box_coding`` (heading bins, heatmap gaussian radius), ``lib.depth_bins`` (RPD / UD /
   SID / LID depth bins and the ``rpd`` section's settings): pure maths used by data, models,
   losses and decoding.
2. io: ``lib.kitti_io`` (KITTI files <-> typed records): below the evaluator, which reads labels
   and results with it, and below the dataset.
3. eval: ``lib.eval`` (the KITTI evaluator, IoU kernels, error analysis, result files).
4. data / model / loss / decode: ``lib.datasets``, ``lib.models``, ``lib.losses``,
   ``lib.decode``. These are siblings: none imports another (what two of them share, such as
   box coding or depth bins, lives in a lower layer).
5. task: ``lib.distiller``, ``lib.visualize``, ``lib.inference``, ``lib.inference_io``: a
   network with its losses, pictures and inference built from the layer below.
6. engine parts: ``lib.engine`` (devices and processes, optimiser, checkpoints, and any new
   module of the package unless it is placed in layer 7).
7. engine loops: ``lib.engine.trainer``, ``lib.engine.tester``, ``lib.engine.task``, siblings:
   the tester does not import the trainer.
8. ``tools/``, ``benchmarks/`` and ``tests/`` on top: ``lib`` never imports them.

Rules: a module imports no module of a higher layer; the sibling groups of layers 4 and 7 do
not import each other; the module graph of ``lib`` has no cycle (so none within a layer either).
Every import statement counts, also one inside a function or under ``TYPE_CHECKING``: a lazy
import hides a dependency from the reader, not from the design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

LIB_DIR = Path(__file__).resolve().parents[1] / "lib"

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("lib", "lib.errors", "lib.constants", "lib.utils", "lib.config")),
    ("geometry", ("lib.geometry", "lib.box_coding", "lib.depth_bins")),
    ("io", ("lib.kitti_io",)),
    ("eval", ("lib.eval",)),
    ("data/model/loss/decode", ("lib.datasets", "lib.models", "lib.losses", "lib.decode")),
    ("task", ("lib.distiller", "lib.visualize", "lib.inference", "lib.inference_io")),
    ("engine parts", ("lib.engine",)),
    ("engine loops", ("lib.engine.trainer", "lib.engine.tester", "lib.engine.task")),
)
SIBLING_LAYERS = ("data/model/loss/decode", "engine loops")  # layers whose groups must not import each other
TOP_LEVEL = ("tools", "benchmarks", "tests")  # above lib: never imported by it
# Known violations being removed by work in progress; each must still occur (remove it when fixed).
PENDING: tuple[str, ...] = ()


def module_name(path: Path, root: Path) -> str:
    """``root/lib/a/b.py`` -> ``lib.a.b``; a package's ``__init__.py`` -> the package."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.Module, module: str, *, is_package: bool, known: set[str]) -> set[str]:
    """Absolute names of every module ``tree`` imports, relative imports resolved.

    ``from pkg import name`` counts as an import of ``pkg.name`` when that is a module in
    ``known``, else of ``pkg``.
    """
    found: set[str] = set()
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules (``lib.*`` or a top-level folder) it imports, for every ``lib`` file."""
    files = {module_name(p, root): p for p in sorted((root / "lib").rglob("*.py"))}
    known = set(files)
    graph = {}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        names = imported_modules(tree, mod, is_package=path.name == "__init__.py", known=known)
        graph[mod] = {n for n in names if n.split(".")[0] in ("lib", *TOP_LEVEL)}
    return graph


def group_of(module: str) -> str | None:
    """The longest layer group naming ``module`` or a package above it (``lib`` only matches itself)."""
    best = None
    for _, groups in LAYERS:
        for g in groups:
            if (module == g or (g != "lib" and module.startswith(g + "."))) and len(g) > len(best or ""):
                best = g
    return best


def layer_index(group: str) -> int:
    return next(i for i, (_, groups) in enumerate(LAYERS) if group in groups)


def layer_violations(graph: Mapping[str, Iterable[str]]) -> list[str]:
    """One line per import that points up, across siblings, into ``tools``, or from an unplaced module."""
    out = []
    for mod in sorted(graph):
        src = group_of(mod)
        if src is None:
            out.append(f"{mod}: in no layer (add it to LAYERS in tests/test_layers.py)")
            continue
        for dep in sorted(graph[mod]):
            if dep.split(".")[0] in TOP_LEVEL:
                out.append(f"{mod} -> {dep}: lib imports {dep.split('.')[0]}/")
                continue
            dst = group_of(dep)
            if dst is None or dst == src:
                continue
            a, b = layer_index(src), layer_index(dst)
            if b > a:
                out.append(f"{mod} -> {dep}: up from {LAYERS[a][0]} to {LAYERS[b][0]}")
            elif a == b and LAYERS[a][0] in SIBLING_LAYERS:
                out.append(f"{mod} -> {dep}: across siblings {src} -> {dst}")
    return out


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (or a self-import), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:  # Tarjan's algorithm; lib's graph is shallow enough to recurse
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
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
            if len(comp) > 1 or v in graph.get(v, ()):
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


@pytest.fixture(scope="module")
def lib_graph() -> dict[str, set[str]]:
    return import_graph(LIB_DIR.parent)


def test_every_lib_module_is_in_a_layer(lib_graph: dict[str, set[str]]) -> None:
    assert len(lib_graph) > 50  # the walk found the package
    assert [m for m in lib_graph if group_of(m) is None] == []


def test_imports_point_down(lib_graph: dict[str, set[str]]) -> None:
    violations = layer_violations(lib_graph)
    new = [v for v in violations if v.split(":")[0] not in PENDING]
    assert new == [], "imports against the layers:\n" + "\n".join(new)
    fixed = set(PENDING) - {v.split(":")[0] for v in violations}
    assert fixed == set(), "no longer violated: remove from PENDING"


def test_no_import_cycles(lib_graph: dict[str, set[str]]) -> None:
    found = cycles(lib_graph)
    assert found == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def module_constants(tree: ast.Module) -> set[str]:
    """Names bound by module-level assignments (``X = ...``, ``X: T = ...``) of ``tree``."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_constants_are_defined_once() -> None:
    """Every name of lib/constants.py is imported from there, never restated in another module."""
    common = module_constants(ast.parse((LIB_DIR / "constants.py").read_text(encoding="utf-8")))
    assert {"HEATMAP_CLASSES", "EVAL_CLASSES", "ROI_SIZE", "HEATMAP_EPS", "MIN_PROJECTION_DEPTH"} <= common
    restated = {
        f"{path.relative_to(LIB_DIR.parent)}: {name}"
        for path in LIB_DIR.rglob("*.py")
        if path != LIB_DIR / "constants.py"
        for name in module_constants(ast.parse(path.read_text(encoding="utf-8"))) & common
    }
    assert restated == set()


# --- the checker itself, on hand-made graphs ------------------------------------------------


def test_checker_flags_up_sibling_and_tools_imports() -> None:
    graph = {
        "lib.geometry": {"lib.constants", "lib.kitti_io"},  # geometry -> io: up
        "lib.eval.iou": {"lib.geometry", "lib.kitti_io"},  # both down
        "lib.losses.criterion": {"lib.datasets.targets", "lib.box_coding"},  # sibling; down
        "lib.decode": {"lib.kitti_io", "lib.datasets.targets"},  # down; sibling
        "lib.distiller": {"lib.engine.checkpoint"},  # up
        "lib.engine.tester": {"lib.engine.dist", "lib.engine.trainer"},  # down; sibling
        "lib.engine.task": {"lib.distiller", "tools.train_val"},  # down; tools
        "lib.newthing": set(),
    }
    assert layer_violations(graph) == [
        "lib.decode -> lib.datasets.targets: across siblings lib.decode -> lib.datasets",
        "lib.distiller -> lib.engine.checkpoint: up from task to engine parts",
        "lib.engine.task -> tools.train_val: lib imports tools/",
        "lib.engine.tester -> lib.engine.trainer: across siblings lib.engine.tester -> lib.engine.trainer",
        "lib.geometry -> lib.kitti_io: up from geometry to io",
        "lib.losses.criterion -> lib.datasets.targets: across siblings lib.losses -> lib.datasets",
        "lib.newthing: in no layer (add it to LAYERS in tests/test_layers.py)",
    ]


def test_module_constants_sees_plain_and_annotated_assignments() -> None:
    tree = ast.parse("A = 1\nB: int = 2\nC, D = 3, 4\ndef f():\n    E = 5\nclass K:\n    F = 6\n")
    assert module_constants(tree) == {"A", "B"}


def test_checker_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e"}, "f": {"d"}}
    assert cycles(graph) == [["a", "b", "c"], ["e"]]


def test_relative_and_lazy_imports_are_resolved() -> None:
    source = (
        "from . import iou_cuda\n"
        "from .kitti_eval import DIFFICULTIES\n"
        "from .. import geometry\n"
        "def f():\n"
        "    import lib.engine.trainer\n"
        "    from lib.models import build_detector\n"
    )
    known = {"lib.eval.iou_cuda", "lib.eval.kitti_eval", "lib.geometry", "lib.engine.trainer", "lib.models"}
    found = imported_modules(ast.parse(source), "lib.eval.iou", is_package=False, known=known)
    assert found == {
        "lib.eval.iou_cuda",
        "lib.eval.kitti_eval",
        "lib.geometry",
        "lib.engine.trainer",
        "lib.models",
    }
    assert group_of("lib") == "lib" and group_of("lib.kitti_io") == "lib.kitti_io"
    assert group_of("lib.datasets.kitti") == "lib.datasets" and group_of("lib.library") is None
