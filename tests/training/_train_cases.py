"""Tiny databases and configs shared by the training tests (not a test module)."""

from __future__ import annotations

from pathlib import Path

from market_nn_plus_ultra.config import Config, load_config
from market_nn_plus_ultra.data.fixtures import write_fixture

#: A model small enough that one CPU epoch over a few thousand windows takes a second.
TINY = [
    "model.architecture=hybrid_transformer",
    "model.d_model=16",
    "model.depth=1",
    "model.n_heads=2",
    "model.ff_mult=2",
    "model.dropout=0.0",
    "model.dilations=[1]",
    "model.ssm_state_dim=4",
    "model.num_experts=2",
    "model.top_k=1",
    "model.tft_hidden=8",
    "model.coarse_factor=2",
    "windows.window=8",
    "windows.horizon=1",
    "model.horizon=1",
    "training.batch_size=64",
    "training.max_epochs=1",
    "training.num_workers=0",
    "training.warmup_steps=0",
    "training.progress_bar=false",
    "training.log_every_n_steps=1",
]


def fixture_db(
    tmp: Path, rows: int = 400, symbols: tuple[str, ...] = ("AAA", "BBB"), **kwargs
) -> Path:
    """A daily synthetic database with ``rows`` bars per symbol."""
    return write_fixture(tmp / "market.db", symbols=symbols, rows=rows, freq="1D", **kwargs)


def tiny_config(db: Path, out: Path, *overrides: str, path: str | Path | None = None) -> Config:
    """The config at ``path`` (defaults when None) shrunk to :data:`TINY`, writing under ``out``."""
    return load_config(
        path,
        [
            f"data.sqlite_path={db}",
            "data.cache=false",
            f"training.checkpoint_dir={out}",
            *TINY,
            *overrides,
        ],
    )
