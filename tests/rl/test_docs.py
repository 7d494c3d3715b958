"""docs/rl.md lists every ``reinforcement.ppo`` field and every transitions column exactly as
the code declares them (the tables are generated from ``PPOConfig`` / ``TRANSITION_COLUMNS``)."""

from __future__ import annotations

import typing
from pathlib import Path

import annotated_types

from market_nn_plus_ultra.config.ppo import OffPolicyConfig, PPOConfig
from market_nn_plus_ultra.rl import TRANSITION_COLUMNS

ROOT = Path(__file__).resolve().parents[2]
TABLE_HEADER = "| field | type | default | range | what it does |"


def _type(annotation: object) -> str:
    if typing.get_origin(annotation) is typing.Literal:
        return " / ".join(f"`{a}`" for a in typing.get_args(annotation))
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if args:  # X | None
        return f"{args[0].__name__} or null"
    return getattr(annotation, "__name__", str(annotation))


def _range(metadata: list) -> str:
    bounds = ((annotated_types.Ge, "ge", "≥"), (annotated_types.Gt, "gt", ">"),
              (annotated_types.Le, "le", "≤"), (annotated_types.Lt, "lt", "<"))  # fmt: skip
    parts = [
        f"{sign} {getattr(m, attr)}"
        for m in metadata
        for kind, attr, sign in bounds
        if isinstance(m, kind)
    ]
    return ", ".join(parts)


def _default(value: object) -> str:
    if value is None:
        return "null"
    return str(value).lower() if isinstance(value, bool) else str(value)


def config_table_rows() -> list[str]:
    """The rows of the ``reinforcement.ppo`` table in docs/rl.md, from the pydantic fields."""
    rows = []
    for prefix, section in (("", PPOConfig), ("off_policy.", OffPolicyConfig)):
        for name, field in section.model_fields.items():
            if field.default_factory is not None:
                continue  # the off_policy section: its own fields follow
            rows.append(
                f"| `{prefix}{name}` | {_type(field.annotation)} | `{_default(field.default)}` "
                f"| {_range(field.metadata)} | {field.description} |"
            )
    return rows


def test_docs_table_lists_every_ppo_field_with_its_default() -> None:
    lines = (ROOT / "docs" / "rl.md").read_text(encoding="utf-8").splitlines()
    heading = "### Configuration: `reinforcement.ppo`"
    assert heading in lines, "docs/rl.md has no reinforcement.ppo configuration section"
    below = lines.index(heading)
    assert TABLE_HEADER in lines[below:], "docs/rl.md has no reinforcement.ppo table"
    start = lines.index(TABLE_HEADER, below) + 2  # after the header and its |---| line
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    documented, expected = lines[start:end], config_table_rows()
    assert documented == expected, (
        "docs/rl.md's reinforcement.ppo table is stale — replace it with:\n" + "\n".join(expected)
    )


def test_docs_list_the_transitions_schema() -> None:
    lines = (ROOT / "docs" / "rl.md").read_text(encoding="utf-8").splitlines()
    header = "| column | content |"
    assert header in lines, "docs/rl.md has no transitions table"
    start = lines.index(header) + 2
    expected = [f"| `{name}` | {content} |" for name, content in TRANSITION_COLUMNS.items()]
    assert lines[start : start + len(expected) + 1] == [*expected, ""], (
        "docs/rl.md's transitions table is stale — replace it with:\n" + "\n".join(expected)
    )
