"""Declarative feature registry: a :class:`FeatureSpec` per feature, registered by decorator.

A feature is declared once — its name, the panel columns it reads, its parameters, the
columns it writes and how many leading rows it leaves NaN — and registered into a plain
dict. The pipeline computes it per symbol on contiguous 1-D arrays::

    @register(inputs=("close",), tags=("custom",), warmup=lambda window: window)
    def range_position_10(close, *, window=10):
        '''Where the close sits in its trailing range (0 = low, 1 = high).'''
        ...

The function receives one float64 array per input column, in ``inputs`` order (the
special input ``timestamp`` arrives as int64 nanoseconds since the epoch, UTC), plus the
parameters as keywords, and returns one array per output (a tuple when there are several).
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "REGISTRY",
    "TIMESTAMP",
    "FeatureError",
    "FeatureRegistry",
    "FeatureSpec",
    "register",
]

TIMESTAMP = "timestamp"
"""Input name that delivers the bar timestamps (int64 ns, UTC) instead of a panel column."""

FeatureFunc = Callable[..., "np.ndarray | tuple[np.ndarray, ...]"]


class FeatureError(ValueError):
    """A feature is declared, selected or parameterised wrongly; the message says the fix."""


def _hint(name: str, known: Iterable[str]) -> str:
    guess = difflib.get_close_matches(name, list(known), n=1)
    return f" — did you mean `{guess[0]}`?" if guess else ""


@dataclass(frozen=True)
class FeatureSpec:
    """One feature (or a group of outputs computed together, like MACD's three lines).

    ``warmup`` is the number of leading rows of every symbol that are NaN by
    construction — an int, or a function of the parameters (called with them as keywords).
    """

    name: str
    func: FeatureFunc
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    warmup: int | Callable[..., int]
    tags: tuple[str, ...] = ()
    description: str = ""
    params: Mapping[str, Any] = field(default_factory=dict)
    tables: tuple[str, ...] = ("series",)
    intraday_only: bool = False
    default: bool = True

    def __post_init__(self) -> None:
        if not self.name.isidentifier() or self.name != self.name.lower():
            raise FeatureError(f"feature name {self.name!r} must be snake_case, e.g. `rsi_14`")
        if not self.inputs:
            raise FeatureError(f"feature {self.name}: declare the columns it reads in `inputs`")
        if not self.outputs or len(set(self.outputs)) != len(self.outputs):
            raise FeatureError(f"feature {self.name}: `outputs` must be non-empty and unique")
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        self.warmup_rows()  # fail at registration, not at compute time

    @property
    def summary(self) -> str:
        """The first line of the description."""
        return self.description.strip().split("\n", 1)[0] if self.description else ""

    def resolve_params(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Default parameters updated with ``overrides``; unknown names are errors."""
        merged = dict(self.params)
        for key, value in (overrides or {}).items():
            if key not in merged:
                known = ", ".join(merged) or "none"
                raise FeatureError(
                    f"feature {self.name}: unknown parameter `{key}`{_hint(key, merged)} "
                    f"Parameters: {known}."
                )
            merged[key] = value
        return merged

    def warmup_rows(self, overrides: Mapping[str, Any] | None = None) -> int:
        """Leading NaN rows per symbol for these parameters."""
        rows = (
            self.warmup(**self.resolve_params(overrides)) if callable(self.warmup) else self.warmup
        )
        if int(rows) != rows or rows < 0:
            raise FeatureError(f"feature {self.name}: warm-up must be a whole number >= 0")
        return int(rows)

    def compute(
        self, arrays: Sequence[np.ndarray], params: Mapping[str, Any]
    ) -> tuple[np.ndarray, ...]:
        """Run the function on one symbol's arrays; returns one array per output, checked."""
        result = self.func(*arrays, **params)
        values = result if isinstance(result, tuple | list) else (result,)
        n = len(arrays[0])
        if len(values) != len(self.outputs):
            raise FeatureError(
                f"feature {self.name}: returned {len(values)} arrays for outputs "
                f"{list(self.outputs)} — return one per output, in order"
            )
        for out, value in zip(self.outputs, values, strict=True):
            if np.shape(value) != (n,):
                raise FeatureError(
                    f"feature {self.name}: output {out} has shape {np.shape(value)}, "
                    f"expected ({n},) (one value per input row)"
                )
        return tuple(values)


class FeatureRegistry:
    """Named features, selectable by output name, group name or tag."""

    def __init__(self) -> None:
        self._specs: dict[str, FeatureSpec] = {}
        self._by_output: dict[str, str] = {}

    # -- registration ------------------------------------------------------------------

    def add(self, spec: FeatureSpec, *, replace: bool = False) -> FeatureSpec:
        """Register ``spec``; names and outputs must be new unless ``replace``."""
        if replace and spec.name in self._specs:
            self.remove(spec.name)
        names = dict.fromkeys((spec.name, *spec.outputs))
        taken = [n for n in names if self._owner(n) is not None]
        if taken:
            raise FeatureError(
                f"feature {spec.name}: {taken} already registered (by "
                f"{sorted({self._owner(n) for n in taken})}) — choose another name or pass "
                "replace=True"
            )
        self._specs[spec.name] = spec
        for out in spec.outputs:
            self._by_output[out] = spec.name
        return spec

    def remove(self, name: str) -> FeatureSpec:
        """Unregister the feature group ``name`` (or the group that owns output ``name``)."""
        spec = self.get(name)
        del self._specs[spec.name]
        for out in spec.outputs:
            self._by_output.pop(out, None)
        return spec

    def register(
        self,
        name: str | None = None,
        *,
        inputs: Sequence[str],
        outputs: Sequence[str] | None = None,
        warmup: int | Callable[..., int],
        tags: Sequence[str] = (),
        description: str | None = None,
        params: Mapping[str, Any] | None = None,
        tables: Sequence[str] = ("series",),
        intraday_only: bool = False,
        default: bool = True,
        replace: bool = False,
    ) -> Callable[[FeatureFunc], FeatureFunc]:
        """Decorator: register a function as a feature (name defaults to the function's).

        ``params`` default to the function's keyword-only defaults; ``description`` to its
        docstring. The function is returned unchanged, so it stays callable directly.
        """

        def decorate(func: FeatureFunc) -> FeatureFunc:
            spec_name = name or func.__name__
            self.add(
                FeatureSpec(
                    name=spec_name,
                    func=func,
                    inputs=tuple(inputs),
                    outputs=tuple(outputs) if outputs else (spec_name,),
                    warmup=warmup,
                    tags=tuple(tags),
                    description=description or inspect.cleandoc(func.__doc__ or ""),
                    params=dict(params) if params is not None else _keyword_defaults(func),
                    tables=tuple(tables),
                    intraday_only=intraday_only,
                    default=default,
                ),
                replace=replace,
            )
            return func

        return decorate

    # -- lookup --------------------------------------------------------------------------

    def _owner(self, name: str) -> str | None:
        if name in self._specs:
            return name
        return self._by_output.get(name)

    def get(self, name: str) -> FeatureSpec:
        """The spec that owns ``name`` (a group name or one of its outputs)."""
        owner = self._owner(name)
        if owner is None:
            known = sorted({*self._specs, *self._by_output})
            raise FeatureError(
                f"unknown feature `{name}`{_hint(name, known)} "
                "Run `plus-ultra features list` to see every feature."
            )
        return self._specs[owner]

    def select(
        self, names: Sequence[str] | None = None, tags: Sequence[str] | None = None
    ) -> dict[str, tuple[str, ...]]:
        """Resolve a selection to ``{group name: outputs to keep}``, in registration order.

        ``names`` pick groups or single outputs; ``tags`` add every group carrying one of
        them. Neither given: every feature marked ``default``.
        """
        chosen: dict[str, set[str]] = {}
        if names is None and tags is None:
            return {n: s.outputs for n, s in self._specs.items() if s.default}
        for name in names or ():
            spec = self.get(name)
            wanted = spec.outputs if name == spec.name else (name,)
            chosen.setdefault(spec.name, set()).update(wanted)
        known_tags = self.tags()
        for tag in tags or ():
            if tag not in known_tags:
                raise FeatureError(
                    f"unknown feature tag `{tag}`{_hint(tag, known_tags)} "
                    f"Tags: {', '.join(known_tags)}."
                )
            for spec in self._specs.values():
                if tag in spec.tags:
                    chosen.setdefault(spec.name, set()).update(spec.outputs)
        return {
            n: tuple(o for o in s.outputs if o in chosen[n])
            for n, s in self._specs.items()
            if n in chosen
        }

    def tags(self) -> list[str]:
        """Every tag in use, sorted."""
        return sorted({t for s in self._specs.values() for t in s.tags})

    def outputs(self) -> list[str]:
        """Every output column name, in registration order."""
        return [o for s in self._specs.values() for o in s.outputs]

    def describe(self) -> pd.DataFrame:
        """One row per output column: name, group, tags, dependencies, warm-up, parameters."""
        rows = [
            {
                "name": out,
                "group": spec.name,
                "tags": ", ".join(spec.tags),
                "dependencies": ", ".join(spec.inputs),
                "tables": ", ".join(spec.tables),
                "warmup": spec.warmup_rows(),
                "parameters": ", ".join(f"{k}={v}" for k, v in spec.params.items()),
                "default": spec.default,
                "intraday_only": spec.intraday_only,
                "description": spec.description,
            }
            for spec in self._specs.values()
            for out in spec.outputs
        ]
        columns = ["name", "group", "tags", "dependencies", "tables", "warmup", "parameters"]
        return pd.DataFrame(rows, columns=[*columns, "default", "intraday_only", "description"])

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._owner(name) is not None

    def __iter__(self) -> Iterator[FeatureSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)

    def copy(self) -> FeatureRegistry:
        """An independent registry with the same specs (to extend without side effects)."""
        other = FeatureRegistry()
        for spec in self._specs.values():
            other.add(spec)
        return other


def _keyword_defaults(func: FeatureFunc) -> dict[str, Any]:
    """Keyword-only parameters with defaults: the feature's tunable parameters."""
    return {
        p.name: p.default
        for p in inspect.signature(func).parameters.values()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
    }


REGISTRY = FeatureRegistry()
"""The default registry: built-in features register here on import, and so can yours."""

register = REGISTRY.register
"""Decorator registering a feature into :data:`REGISTRY` (see :meth:`FeatureRegistry.register`)."""
