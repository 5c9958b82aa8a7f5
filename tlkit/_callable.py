"""Public functions that share their name with the module they live in (``tlkit.evaluate``,
``tlkit.compare``, ``tlkit.demo``).

Importing ``tlkit.evaluate`` rebinds the package attribute ``tlkit.evaluate`` to the module, which
would hide the function of that name. Making the module itself callable keeps ``tlkit.evaluate(...)``
working either way.
"""

from __future__ import annotations

import sys
import types
from typing import Any, Callable


def make_module_callable(module_name: str, func: Callable[..., Any]) -> None:
    """Calling the module ``module_name`` calls ``func``."""

    class _CallableModule(types.ModuleType):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            return func(*args, **kwargs)

    _CallableModule.__doc__ = f"Calling this module calls {func.__module__}.{func.__qualname__}."
    sys.modules[module_name].__class__ = _CallableModule
