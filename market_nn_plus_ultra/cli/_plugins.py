"""``--plugin``: import the user's own module so the features it registers exist.

A plugin is plain Python that registers features with the public decorator::

    # my_features.py
    from market_nn_plus_ultra.features import register

    @register(inputs=("close", "volume"), warmup=19, tags=("custom",))
    def vwap_gap_20(close, volume, *, window=20): ...

and is named on the command line, as a file or as an importable module:
``--plugin my_features.py`` or ``--plugin mypackage.features``. Plugins are named
where they are used rather than as import paths in YAML, so a typo fails at once with
the reason instead of silently computing fewer features.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["PluginOption", "load_plugins"]

PluginOption = Annotated[
    list[str] | None,
    typer.Option(
        "--plugin",
        help="Python file or module that registers custom features with "
        "`market_nn_plus_ultra.features.register` (repeatable); its features are included.",
    ),
]

#: Feature groups each plugin registered, by plugin argument (a plugin is imported once
#: per process; a second load must still report what it added).
_LOADED: dict[str, list[str]] = {}


def _import_file(path: Path) -> None:
    if not path.is_file():
        raise FileNotFoundError(f"--plugin {path}: no such file — give a .py file or a module")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    name = f"_plus_ultra_plugin_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"--plugin {path}: not a Python file — give a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise


def _import(argument: str) -> None:
    if argument.endswith(".py") or "/" in argument or "\\" in argument:
        _import_file(Path(argument))
        return
    try:
        importlib.import_module(argument)
    except ModuleNotFoundError as err:
        if err.name is not None and argument.startswith(err.name):
            raise ValueError(
                f"--plugin {argument}: no module named {err.name!r} — pass a path to a .py "
                "file, or install the module / add its folder to PYTHONPATH"
            ) from None
        raise


def load_plugins(plugins: list[str] | None) -> list[str]:
    """Import each plugin (file path or module name); return the feature groups they added.

    A plugin that fails to import raises ``ValueError`` naming the plugin and the cause
    (the CLI prints it as a clean error).
    """
    from ..features import REGISTRY

    added: list[str] = []
    for argument in plugins or []:
        if argument not in _LOADED:
            before = {spec.name for spec in REGISTRY}
            try:
                _import(argument)
            except Exception as err:  # the user's code: report it, never a bare traceback
                message = str(err)
                if not message.startswith("--plugin"):
                    message = f"--plugin {argument} failed to import: {type(err).__name__}: {err}"
                raise ValueError(message) from None
            _LOADED[argument] = [spec.name for spec in REGISTRY if spec.name not in before]
        added += [name for name in _LOADED[argument] if name in REGISTRY]
    return list(dict.fromkeys(added))
