"""How much code a reader follows for one training step, and other size figures of the repository.

    python tools/dev/step_lines.py                  # this checkout
    python tools/dev/step_lines.py --root ../other  # another checkout (e.g. a git worktree)
    python tools/dev/step_lines.py --json step.json

Static and approximate, the same rule for every checkout: from ``tools/train_val.py`` ``main``,
the project functions and classes that each reached definition calls or names are reached in
turn; calls into other packages (torch, numpy, ...) are not followed. A class that is reached
brings its ``__init__``, ``__post_init__``, ``__call__``, ``forward``, ``__getitem__``,
``__len__`` and ``__iter__``; ``self.m()`` is the method of the class or a project base and its
overrides in project subclasses; ``x.m()`` with an unknown ``x`` is every reached class's ``m``.
The step ends at the first ``backward()``: in a definition on the way to it, what follows the
call that leads there is not followed, and of an ``if`` only the branch that leads there. The
lines of each reached definition are counted (decorators, docstring, nested functions; of a
class its own lines without its methods; module constants and tables that are named).

Also printed: the lines of ``lib/``, the keys of ``configs/base.yaml`` (leaves), the ``*Settings``
classes of lib/ and tools/, and the call sites of ``build_detector`` outside lib/models/.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PACKAGES = ("lib", "tools")
ENTRY = ("tools.train_val", "main")
CLASS_IMPLICIT = ("__init__", "__post_init__", "__call__", "forward", "__getitem__", "__len__", "__iter__")
STEP_END = "backward"
BUILD = "build_detector"


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    defs: dict[str, ast.AST] = field(default_factory=dict)  # top-level functions and classes
    imports: dict[str, str] = field(default_factory=dict)  # local name -> dotted target


@dataclass(frozen=True)
class Def:
    """A function, method or class: its module, its node, and its class for a method."""

    module: str
    node: ast.AST
    owner: ast.ClassDef | None = None


def load_modules(root: Path) -> dict[str, Module]:
    """Every .py file of the project packages, parsed, with its top-level names and imports."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            module = Module(name, path, ast.parse(path.read_text(), str(path)))
            for node in module.tree.body:
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    module.defs[node.name] = node
                elif isinstance(node, (ast.Assign, ast.AnnAssign)):  # module constants and tables
                    for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                        if isinstance(target, ast.Name):
                            module.defs[target.id] = node
            module.imports = imports_of(module.tree, name, path.name == "__init__.py")
            modules[name] = module
    return modules


def imports_of(tree: ast.AST, module: str, is_package: bool) -> dict[str, str]:
    """local name -> dotted target of every import statement in ``tree`` (nested ones too)."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                out[alias.asname or alias.name.split(".")[0]] = (
                    alias.name if alias.asname else alias.name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                out[alias.asname or alias.name] = f"{base}.{alias.name}"
    return out


class Graph:
    """Resolves names to project definitions and walks one training step."""

    def __init__(self, modules: dict[str, Module]) -> None:
        self.modules = modules
        self.reached: dict[int, Def] = {}
        self.live_classes: dict[int, Def] = {}
        self.ends: dict[int, bool] = {}  # definition -> whether it leads to backward()
        self.local_imports: dict[int, dict[str, str]] = {}
        self.all_classes = {
            id(node): Def(m.name, node)
            for m in modules.values()
            for node in m.defs.values()
            if isinstance(node, ast.ClassDef)
        }

    def resolve(self, dotted: str, depth: int = 0) -> Def | str | None:
        """A dotted name -> its definition, a module name (str), or None (outside the project)."""
        if dotted in self.modules:
            return dotted
        module, _, name = dotted.rpartition(".")
        if module not in self.modules or depth > 10:
            return None
        mod = self.modules[module]
        if name in mod.defs:
            return Def(module, mod.defs[name])
        if name in mod.imports:
            return self.resolve(mod.imports[name], depth + 1)
        return self.resolve(f"{module}.{name}", depth + 1) if f"{module}.{name}" in self.modules else None

    def lookup(self, where: Def, name: str) -> Def | str | None:
        """``name`` as seen from inside ``where``: its imports (local ones too), then its module."""
        key = id(where.node)
        if key not in self.local_imports:
            self.local_imports[key] = imports_of(where.node, where.module, False)
        local = self.local_imports[key]
        if name in local:
            return self.resolve(local[name])
        mod = self.modules[where.module]
        if name in mod.defs:
            return Def(where.module, mod.defs[name])
        if name in mod.imports:
            return self.resolve(mod.imports[name])
        return None

    def methods(self, cls: Def, name: str, depth: int = 0) -> Iterator[Def]:
        """``cls.name`` in the class or its project bases."""
        for node in cls.node.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == name:
                yield Def(cls.module, node, cls.node)
                return
        for base in cls.node.bases:
            target = self.lookup(cls, base.id) if isinstance(base, ast.Name) else None
            if isinstance(target, Def) and isinstance(target.node, ast.ClassDef) and depth < 10:
                yield from self.methods(target, name, depth + 1)

    def derives(self, cls: Def, base: ast.ClassDef, depth: int = 0) -> bool:
        """Whether the class ``cls`` has ``base`` among its project bases."""
        for expr in cls.node.bases:
            target = self.lookup(cls, expr.id) if isinstance(expr, ast.Name) else None
            if isinstance(target, Def) and isinstance(target.node, ast.ClassDef) and depth < 10:
                if target.node is base or self.derives(target, base, depth + 1):
                    return True
        return False

    def targets(self, where: Def, node: ast.AST, classes: dict[int, Def] | None = None) -> list[Def]:
        """The project definitions a call's function (or a bare name) stands for; ``x.m`` with an
        unknown ``x``: ``m`` of ``classes`` (default: the reached ones)."""
        if isinstance(node, ast.Name):
            target = self.lookup(where, node.id)
            return [target] if isinstance(target, Def) else []
        if not isinstance(node, ast.Attribute):
            return []
        value = node.value
        if isinstance(value, ast.Name) and value.id in ("self", "cls") and where.owner is not None:
            owner = Def(where.module, where.owner)
            overrides = [  # the method of a project subclass
                m
                for cls in self.all_classes.values()
                if cls.node is not owner.node and self.derives(cls, owner.node)
                for m in self.methods(cls, node.attr)
            ]
            return [*self.methods(owner, node.attr), *overrides]
        if isinstance(value, ast.Name):
            target = self.lookup(where, value.id)
            if isinstance(target, str):
                found = self.resolve(f"{target}.{node.attr}")
                return [found] if isinstance(found, Def) else []
            if isinstance(target, Def) and isinstance(target.node, ast.ClassDef):
                return list(self.methods(target, node.attr))
        classes = self.live_classes if classes is None else classes
        return [m for cls in list(classes.values()) for m in self.methods(cls, node.attr)]

    def reach(self, item: Def) -> None:
        if id(item.node) in self.reached:
            return
        self.reached[id(item.node)] = item
        if isinstance(item.node, (ast.Assign, ast.AnnAssign)):
            if item.node.value is not None:
                self.uses(item, item.node.value)
            return
        if isinstance(item.node, ast.ClassDef):
            self.live_classes[id(item.node)] = item
            for name in CLASS_IMPLICIT:
                for method in self.methods(item, name):
                    self.reach(method)
            return
        self.walk(item, item.node.body)

    def leads_to_end(self, where: Def, node: ast.AST) -> bool:
        """Whether ``node`` calls ``backward()`` or a definition that (transitively) does."""
        for sub in calls(node):
            if isinstance(sub.func, ast.Attribute) and sub.func.attr == STEP_END:
                return True
            for target in self.targets(where, sub.func, self.all_classes):
                if not isinstance(target.node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                key = id(target.node)
                if key not in self.ends:
                    self.ends[key] = False  # a cycle does not lead there through itself
                    self.ends[key] = self.leads_to_end(target, ast.Module(target.node.body, []))
                if self.ends[key]:
                    return True
        return False

    def walk(self, where: Def, body: list[ast.stmt]) -> bool:
        """Reach what ``body`` uses, statement by statement, up to the step's end; True at the end."""
        for stmt in body:
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue  # runs when called (see executed)
            if isinstance(stmt, ast.If) and self.leads_to_end(where, stmt):
                self.uses(where, stmt.test)
                branch = stmt.body if self.leads_to_end(where, ast.Module(stmt.body, [])) else stmt.orelse
                if self.walk(where, branch):
                    return True
                continue
            if isinstance(stmt, (ast.For, ast.While, ast.With, ast.Try)) and self.leads_to_end(where, stmt):
                head = [getattr(stmt, k) for k in ("iter", "test") if hasattr(stmt, k)]
                head += [i.context_expr for i in getattr(stmt, "items", [])]
                for expr in head:
                    self.uses(where, expr)
                if self.walk(where, stmt.body):
                    return True
                continue
            self.uses(where, stmt)
            if self.leads_to_end(where, stmt):
                return True
        return False

    def uses(self, where: Def, node: ast.AST) -> None:
        for sub in executed(node):
            if isinstance(sub, ast.Call):
                for target in self.targets(where, sub.func):
                    self.reach(target)
            elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Load):
                for target in self.targets(where, sub):
                    self.reach(target)


def executed(node: ast.AST) -> Iterator[ast.AST]:
    """The sub-nodes of ``node`` that run with it: not the bodies of nested functions or classes
    (they run when called, which a step reaches through their names only when it calls them)."""
    stack = [node]
    while stack:
        sub = stack.pop()
        yield sub
        nested = isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and sub is not node
        stack.extend(() if nested else ast.iter_child_nodes(sub))


def calls(node: ast.AST) -> Iterator[ast.Call]:
    return (sub for sub in executed(node) if isinstance(sub, ast.Call))


def own_lines(item: Def) -> tuple[int, int]:
    """(lines, docstring lines) of a definition; a class without its methods."""
    node = item.node
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))])
    lines = node.end_lineno - start + 1
    if isinstance(node, ast.ClassDef):
        lines -= sum(
            s.end_lineno - min([s.lineno, *(d.lineno for d in s.decorator_list)]) + 1
            for s in node.body
            if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))
        )
    first = node.body[0] if getattr(node, "body", None) else None
    is_doc = isinstance(first, ast.Expr) and isinstance(getattr(first, "value", None), ast.Constant)
    doc = first.end_lineno - first.lineno + 1 if is_doc and isinstance(first.value.value, str) else 0
    return lines, doc


def step_lines(root: Path) -> dict:
    """The reached definitions from ``tools/train_val.py`` ``main`` to ``backward()``, counted."""
    modules = load_modules(root)
    graph = Graph(modules)
    entry = modules[ENTRY[0]]
    graph.reach(Def(ENTRY[0], entry.defs[ENTRY[1]]))
    files: dict[str, int] = {}
    total = docs = 0
    for item in graph.reached.values():
        lines, doc = own_lines(item)
        total, docs = total + lines, docs + doc
        path = str(modules[item.module].path.relative_to(root))
        files[path] = files.get(path, 0) + lines
    return {"lines": total, "docstring_lines": docs, "definitions": len(graph.reached), "files": files}


def repository_sizes(root: Path) -> dict:
    """Lines of lib/, leaf keys of configs/base.yaml, *Settings classes, build_detector call sites."""
    lib_lines = sum(len(p.read_text().splitlines()) for p in (root / "lib").rglob("*.py"))

    def leaves(node) -> int:
        return sum(leaves(v) for v in node.values()) if isinstance(node, dict) else 1

    settings, builds = [], []
    for package in ("lib", "tools"):
        for path in sorted((root / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            rel = str(path.relative_to(root))
            settings += [
                n.name for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name.endswith("Settings")
            ]
            if rel.startswith("lib/models/"):
                continue
            builds += [
                f"{rel}:{n.lineno}"
                for n in ast.walk(tree)
                if isinstance(n, ast.Call)
                and getattr(n.func, "id", getattr(n.func, "attr", None)) == "build_detector"
            ]
    base = yaml.safe_load((root / "configs" / "base.yaml").read_text())
    return {
        "lib_lines": lib_lines,
        "base_yaml_keys": leaves(base),
        "settings_classes": len(settings),
        "build_detector_call_sites": builds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[2], help="a checkout")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    step = step_lines(args.root)
    sizes = repository_sizes(args.root)
    share = step["docstring_lines"] / max(step["lines"], 1)
    print(
        f"one training step (train_val.py main -> backward()): {step['lines']} lines in "
        f"{step['definitions']} definitions of {len(step['files'])} files, {step['docstring_lines']} "
        f"of them docstrings ({share:.0%})"
    )
    for path, lines in sorted(step["files"].items(), key=lambda kv: -kv[1]):
        print(f"  {lines:5d}  {path}")
    print(
        f"lib/: {sizes['lib_lines']} lines; configs/base.yaml: {sizes['base_yaml_keys']} keys; "
        f"{sizes['settings_classes']} *Settings classes; build_detector called at "
        f"{len(sizes['build_detector_call_sites'])} sites outside lib/models/"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"step": step, **sizes}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
