"""Metric names in PromQL expressions and in a service's registry (not a test module)."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

#: Words of PromQL that read like metric names but are operators or modifiers.
_KEYWORDS = {
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
    "atan2",
    "group_left",
    "group_right",
}
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_LABEL_VALUES = re.compile(r"label_values\(\s*([a-zA-Z_:][\w:]*)[^)]*\)")


def promql_metrics(expr: str) -> set[str]:
    """The metric names an expression reads (functions, keywords, labels and strings out)."""
    text = _LABEL_VALUES.sub(r" \1 ", expr)  # Grafana's label_values(metric, label)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # string literals
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # range and subquery selectors
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables
    text = _GROUPING.sub(" ", text)  # by (le, route) …
    names = set()
    for m in re.finditer(r"(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?", text):
        if m.group(2) is None and m.group(1) not in _KEYWORDS:
            names.add(m.group(1))
    return names


def registry_names(registry: CollectorRegistry) -> set[str]:
    """Every sample name a registry exposes: the samples it holds now, and — for labelled
    families with no series yet — the names their type gives (``_total``, ``_bucket`` …)."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(s.name for s in family.samples)
        if family.samples:
            continue
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names
