"""What validation found: one :class:`ValidationFailure` per (table, column, check).

A report is plain data so that the CLI can print it as a table, loaders can log it and
tests can assert on it. Errors make data unusable; warnings (gaps, unknown extra columns)
are worth a look but do not stop a non-strict run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pandas as pd

__all__ = ["DataValidationError", "ValidationFailure", "ValidationReport"]

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class ValidationFailure:
    """One failing check on one column of one table.

    ``first_keys`` holds up to five offending rows as tuples of their key values, raw as
    stored (``("AAPL", "2021-03-01T14:30:00Z")``); it is empty for table-level failures
    (missing table or column). ``column`` is ``"*"`` when the whole table is concerned.
    """

    table: str
    column: str
    check: str
    n_rows: int
    first_keys: tuple[tuple[str, ...], ...]
    fix: str
    severity: Severity = "error"

    @property
    def message(self) -> str:
        """``series.close: 12 null values for AAPL from … — drop them or …``."""
        return f"{self.table}.{self.column}: {self.fix}"

    def __str__(self) -> str:
        return f"[{self.severity}] {self.message} ({self.check})"


class DataValidationError(ValueError):
    """Raised by :meth:`ValidationReport.raise_if_failed`; the message lists every error."""

    def __init__(self, report: ValidationReport, *, strict: bool = False) -> None:
        self.report = report
        shown = report.failures if strict else report.errors
        kinds = "problems" if strict else "errors"
        lines = [f"data validation failed with {len(shown)} {kinds}:"]
        lines += [f"  - {f.message} [{f.check}]" for f in shown]
        super().__init__("\n".join(lines))


@dataclass
class ValidationReport:
    """Every failure found, plus the rows checked and (for non-strict loads) dropped.

    ``rows`` maps each validated table to its row count; ``dropped`` maps a table to the
    rows :func:`~market_nn_plus_ultra.data.validation.drop_invalid_rows` removed.
    """

    failures: list[ValidationFailure] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def errors(self) -> list[ValidationFailure]:
        return [f for f in self.failures if f.severity == "error"]

    @property
    def warnings(self) -> list[ValidationFailure]:
        return [f for f in self.failures if f.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def passed(self, *, strict: bool = False) -> bool:
        """No errors; with ``strict``, no warnings either."""
        return not self.failures if strict else self.ok

    def raise_if_failed(self, *, strict: bool = False) -> None:
        """Raise :class:`DataValidationError` listing every error (every failure if strict)."""
        if not self.passed(strict=strict):
            raise DataValidationError(self, strict=strict)

    def summary(self) -> str:
        """One line: ``2 errors, 1 warning in 3 tables (1,024 rows checked)``."""
        n_err, n_warn = len(self.errors), len(self.warnings)
        text = (
            f"{n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)} "
            f"in {len(self.rows)} table{'s' * (len(self.rows) != 1)} "
            f"({sum(self.rows.values()):,} rows checked)"
        )
        if self.dropped:
            text += "; dropped " + ", ".join(f"{n:,} {t} rows" for t, n in self.dropped.items())
        return text

    def to_frame(self) -> pd.DataFrame:
        """The failures as a DataFrame (one row each), errors first."""
        records = [
            {
                "severity": f.severity,
                "table": f.table,
                "column": f.column,
                "check": f.check,
                "n_rows": f.n_rows,
                "first_keys": "; ".join(" ".join(k) for k in f.first_keys),
                "fix": f.fix,
            }
            for f in sorted(self.failures, key=lambda f: f.severity != "error")
        ]
        columns = ["severity", "table", "column", "check", "n_rows", "first_keys", "fix"]
        return pd.DataFrame.from_records(records, columns=columns)

    def extend(self, other: ValidationReport) -> None:
        """Merge another report into this one."""
        self.failures.extend(other.failures)
        self.rows.update(other.rows)
        for table, n in other.dropped.items():
            self.dropped[table] = self.dropped.get(table, 0) + n
