"""Lazy public names for a package's ``__init__`` (PEP 562): ``import tlkit`` stays light, and a name's
module (torch, the pipeline) is imported the first time the name is used."""

from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy_exports(package: str, table: dict[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package`` for ``table`` (public name -> "module:attribute");
    ``namespace`` is the package's ``globals()``, whose own names ``dir()`` lists too."""

    def __getattr__(name: str) -> Any:
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = table[name].partition(":")
        return getattr(importlib.import_module(module), attr)

    def __dir__() -> list[str]:
        return sorted([*namespace, *table])

    return __getattr__, __dir__
