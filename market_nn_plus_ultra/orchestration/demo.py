"""The demo workflow behind ``make demo``: real data in, validated databases out.

Step one builds two databases under the output folder from sources that need no
network: ``market.db`` from real index data shipped inside a PyPI package (S&P 500 and
NASDAQ Composite daily bars, 1999–2018, from ``arch``), and ``fixture.db``, a synthetic
multi-asset panel with a planted, known predictive signal. Both are validated strictly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..data.fixtures import write_fixture
from ..data.samples import import_samples
from ..data.store import summarise_series
from ..data.validation import ValidationReport, validate_database

__all__ = ["DEMO_SAMPLES", "DatabaseSummary", "DemoResult", "build_demo_databases"]

#: Real datasets of the demo database (names of ``plus-ultra data samples``).
DEMO_SAMPLES = ("sp500", "nasdaq")
_FIXTURE = dict(
    symbols=["SPY", "QQQ", "IWM", "BTC-USD"],
    rows=4096,
    freq="1h",
    alt_features=4,
    planted_signal=0.1,
)


@dataclass(frozen=True)
class DatabaseSummary:
    """What one demo database holds and whether it passed validation."""

    path: Path
    description: str
    series: pd.DataFrame  # symbol, rows, start, end
    validation: ValidationReport

    @property
    def rows(self) -> int:
        return int(self.series["rows"].sum())


@dataclass
class DemoResult:
    """Paths and summaries of everything the demo wrote."""

    output: Path
    databases: list[DatabaseSummary] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(d.validation.passed(strict=True) for d in self.databases)


def _summarise(path: Path, description: str) -> DatabaseSummary:
    return DatabaseSummary(path, description, summarise_series(path), validate_database(path))


def build_demo_databases(
    output: str | Path,
    *,
    seed: int = 7,
    step: Callable[[str], None] | None = None,
) -> DemoResult:
    """Write ``market.db`` (real data) and ``fixture.db`` (synthetic) under ``output``.

    Re-running replaces both atomically. ``step`` is called with a label before each
    piece of work (for progress display).
    """
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    step = step or (lambda _label: None)
    result = DemoResult(output)

    step("importing real index data (S&P 500, NASDAQ Composite)")
    market = output / "market.db"
    import_samples(market, DEMO_SAMPLES, overwrite=True)
    step("validating market.db")
    result.databases.append(
        _summarise(market, "real daily index bars shipped with the `arch` package")
    )

    step("generating the synthetic fixture")
    fixture = write_fixture(output / "fixture.db", seed=seed, overwrite=True, **_FIXTURE)
    step("validating fixture.db")
    result.databases.append(
        _summarise(
            fixture,
            f"synthetic {_FIXTURE['freq']} bars, planted signal IC {_FIXTURE['planted_signal']}",
        )
    )
    return result
