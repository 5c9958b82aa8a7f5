"""The layout's figures: import cycles, private names used across modules, long modules and functions.

Usage (from the repository root)::

    uv run python bench/structure.py            # prints the figures; exit 1 if a limit is broken
    uv run python bench/structure.py --max-lines 400 --max-function 80

What counts:

* **import cycles** between tlkit modules, imports inside functions included (they hide cycles,
  they do not remove them). A package's ``__init__`` counts as a module of its own; an import of
  ``tlkit.a.b`` also imports ``tlkit.a``.
* **private names across modules**: a name starting with one underscore that one tlkit module
  defines (a function, class, module-level name or ``self._attribute``) and another one uses
  (``from tlkit.x import _name`` or ``something._name``) without defining it itself.
* **long modules** (lines) and **long functions** (lines from ``def`` to the last line of the body).

``tests/test_structure.py`` runs the same checks, so ``make test`` keeps them.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int
    imports: set[str] = field(default_factory=set)
    defines: set[str] = field(default_factory=set)  # private names defined here
    uses: dict[str, int] = field(default_factory=dict)  # private name -> first line it is used on


def module_name(path: Path, package: Path) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _read(path: Path, package: Path) -> Module:
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text, filename=str(path))
    mod = Module(module_name(path, package), path, tree, len(text.splitlines()))
    base = mod.name if path.name == "__init__.py" else mod.name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mod.imports.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                anchor = base.split(".")[: len(base.split(".")) - node.level + 1]
                source = ".".join(anchor + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            mod.imports.add(source)
            for alias in node.names:
                mod.imports.add(f"{source}.{alias.name}")  # `from pkg import submodule`
                if _private(alias.name):
                    mod.uses.setdefault(alias.name, node.lineno)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and _private(node.name):
            mod.defines.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _private(node.id):
            mod.defines.add(node.id)
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            if isinstance(node.ctx, ast.Store):
                mod.defines.add(node.attr)
            else:
                mod.uses.setdefault(node.attr, node.lineno)
    return mod


def read_package(package: Path) -> dict[str, Module]:
    modules = [_read(p, package) for p in sorted(package.rglob("*.py"))]
    return {m.name: m for m in modules}


def import_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for mod in modules.values():
        targets = set()
        for name in mod.imports:
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a and a.b first
                candidate = ".".join(parts[:i])
                if candidate in modules and candidate != mod.name:
                    targets.add(candidate)
        graph[mod.name] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _is_package_parent(parent: str, child: str) -> bool:
    return child.startswith(parent + ".")


def package_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles left once a package's ``__init__`` importing its own submodules is not counted."""
    pruned = {v: {w for w in ws if not _is_package_parent(v, w)} for v, ws in graph.items()}
    return cycles(pruned)


def private_leaks(modules: dict[str, Module]) -> list[tuple[str, int, str, list[str]]]:
    """(module, line, name, modules that define it) for each private name used outside its module."""
    owners: dict[str, list[str]] = {}
    for mod in modules.values():
        for name in mod.defines:
            owners.setdefault(name, []).append(mod.name)
    leaks = []
    for mod in modules.values():
        for name, line in sorted(mod.uses.items()):
            if name in owners and name not in mod.defines:
                leaks.append((mod.name, line, name, sorted(owners[name])))
    return sorted(leaks)


def functions(modules: dict[str, Module]) -> list[tuple[int, str]]:
    """(lines, "module:qualified.name") of every function and method."""
    found = []

    def walk(node: ast.AST, prefix: str, mod: Module) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                found.append((child.end_lineno - first + 1, f"{mod.name}:{prefix}{child.name}"))
                walk(child, f"{prefix}{child.name}.", mod)
            elif isinstance(child, ast.ClassDef):
                walk(child, f"{prefix}{child.name}.", mod)

    for mod in modules.values():
        walk(mod.tree, "", mod)
    return sorted(found, reverse=True)


def classes(modules: dict[str, Module]) -> list[tuple[int, str]]:
    found = [(n.end_lineno - n.lineno + 1, f"{m.name}:{n.name}") for m in modules.values()
             for n in ast.walk(m.tree) if isinstance(n, ast.ClassDef)]
    return sorted(found, reverse=True)


@dataclass
class Figures:
    modules: int
    cycles: list[list[str]]
    leaks: list[tuple[str, int, str, list[str]]]
    long_modules: list[tuple[int, str]]
    long_functions: list[tuple[int, str]]
    largest_module: tuple[int, str]
    largest_function: tuple[int, str]
    largest_class: tuple[int, str]


def measure(package: Path = ROOT / "tlkit", *, max_lines: int = 400, max_function: int = 80) -> Figures:
    modules = read_package(package)
    sizes = sorted(((m.lines, str(m.path.relative_to(package.parent))) for m in modules.values()), reverse=True)
    funcs = functions(modules)
    return Figures(
        modules=len(modules),
        cycles=package_cycles(import_graph(modules)),
        leaks=private_leaks(modules),
        long_modules=[s for s in sizes if s[0] > max_lines],
        long_functions=[f for f in funcs if f[0] > max_function],
        largest_module=sizes[0],
        largest_function=funcs[0] if funcs else (0, "-"),
        largest_class=(classes(modules) or [(0, "-")])[0],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", type=Path, default=ROOT / "tlkit")
    parser.add_argument("--max-lines", type=int, default=400)
    parser.add_argument("--max-function", type=int, default=80)
    args = parser.parse_args(argv)
    fig = measure(args.package, max_lines=args.max_lines, max_function=args.max_function)
    for cycle in fig.cycles:
        print("import cycle: " + " <-> ".join(cycle))
    for mod, line, name, owners in fig.leaks:
        print(f"private name: {mod}:{line} uses {name} of {', '.join(owners)}")
    for lines, path in fig.long_modules:
        print(f"module over {args.max_lines} lines: {path} ({lines})")
    for lines, name in fig.long_functions:
        print(f"function over {args.max_function} lines: {name} ({lines})")
    print(f"{fig.modules} modules; {len(fig.cycles)} import cycles; {len(fig.leaks)} private names across modules; "
          f"{len(fig.long_modules)} modules > {args.max_lines} lines; {len(fig.long_functions)} functions > "
          f"{args.max_function} lines")
    print(f"largest module {fig.largest_module[1]} ({fig.largest_module[0]} lines); largest function "
          f"{fig.largest_function[1]} ({fig.largest_function[0]}); largest class {fig.largest_class[1]} "
          f"({fig.largest_class[0]})")
    broken = fig.cycles or fig.leaks or fig.long_modules or fig.long_functions
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
