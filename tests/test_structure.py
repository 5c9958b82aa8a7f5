"""The layout keeps its shape: no import cycles, no private names across modules, short modules and
functions (the figures of bench/structure.py, which prints them)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _structure():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("tlkit_bench_structure", ROOT / "bench" / "structure.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


def test_the_package_has_no_cycles_no_private_leaks_and_small_parts() -> None:
    fig = _structure().measure(ROOT / "tlkit", max_lines=400, max_function=80)
    assert fig.cycles == [], f"import cycles: {fig.cycles}"
    assert fig.leaks == [], f"private names used outside their module: {fig.leaks}"
    assert fig.long_modules == [], f"modules over 400 lines: {fig.long_modules}"
    assert fig.long_functions == [], f"functions over 80 lines: {fig.long_functions}"


def test_the_checker_sees_what_it_checks(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("def _helper():\n    return 1\n\n\ndef f():\n    from pkg import b\n    return b\n")
    (pkg / "b.py").write_text("from pkg import a\n\n\ndef g():\n    return a._helper()\n" + "x = 1\n" * 5)
    fig = _structure().measure(pkg, max_lines=6, max_function=2)
    assert fig.cycles == [["pkg.a", "pkg.b"]]  # the import inside f() counts
    assert [(m, name) for m, _, name, _ in fig.leaks] == [("pkg.b", "_helper")]
    assert sorted(path for _, path in fig.long_modules) == ["pkg/a.py", "pkg/b.py"]
    assert {name for _, name in fig.long_functions} == {"pkg.a:f"}
