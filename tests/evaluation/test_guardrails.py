"""Guardrails: hand-computed caps, turnover, CVaR de-risk and drawdown stop; causality; errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.config import GuardrailsConfig
from market_nn_plus_ultra.data.store import write_database
from market_nn_plus_ultra.evaluation.guardrails import (
    BREACH_COLUMNS,
    apply_guardrails,
    sectors_from_assets,
)

OFF = {"max_position": None}


def _frame(positions: dict[str, list[float]], returns: dict[str, list[float]] | None = None):
    n = len(next(iter(positions.values())))
    stamps = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    rows = []
    for symbol, pos in positions.items():
        ret = (returns or {}).get(symbol, [0.0] * n)
        rows.append(
            pd.DataFrame(
                {"timestamp": stamps, "symbol": symbol, "position": pos, "realised_return": ret}
            )
        )
    return pd.concat(rows).sort_values(["timestamp", "symbol"]).reset_index(drop=True)


def _pos(frame: pd.DataFrame, symbol: str) -> np.ndarray:
    return frame.loc[frame["symbol"] == symbol, "position"].to_numpy()


def test_position_gross_net_and_sector_caps():
    frame = _frame({"A": [1.5, -2.0], "B": [1.0, 0.2], "C": [1.0, 0.1]})
    adjusted, breaches = apply_guardrails(frame, GuardrailsConfig(max_position=1.0))
    np.testing.assert_allclose(_pos(adjusted, "A"), [1.0, -1.0])
    assert list(breaches.columns) == BREACH_COLUMNS
    assert (breaches["rule"] == "max_position").sum() == 2
    assert breaches.iloc[0][["before", "after"]].tolist() == [1.5, 1.0]

    # bar 0 after the clip: [1, 1, 1] → gross 1 > 0.4 → every position × 0.4
    adjusted, _ = apply_guardrails(frame, GuardrailsConfig(max_gross=0.4))
    np.testing.assert_allclose(adjusted["position"].iloc[:3], 0.4)
    # bar 1: [-1, 0.2, 0.1]: gross 1.3 / 3 > 0.4 → × 0.4 / (1.3 / 3)
    scaled = np.array([-1, 0.2, 0.1]) * 1.2 / 1.3
    np.testing.assert_allclose(adjusted["position"].iloc[3:], scaled)

    adjusted, breaches = apply_guardrails(frame, GuardrailsConfig(max_net=0.3))
    np.testing.assert_allclose(adjusted["position"].iloc[:3], 0.3)  # net 1 → 0.3
    np.testing.assert_allclose(adjusted["position"].iloc[3:], [-1, 0.2, 0.1])  # |net| 0.23
    assert set(breaches["rule"]) == {"max_position", "max_net"}

    sectors = {"A": "tech", "B": "tech", "C": "energy"}
    cfg = GuardrailsConfig(sector_caps={"tech": 0.4})
    adjusted, breaches = apply_guardrails(frame, cfg, sectors=sectors)
    # bar 0: tech gross (1 + 1) / 3 = 0.667 > 0.4 → A, B × 0.6; C untouched
    np.testing.assert_allclose(adjusted["position"].iloc[:3], [0.6, 0.6, 1.0])
    assert breaches.loc[breaches["rule"] == "sector_cap", "detail"].str.contains("tech").all()


def test_static_factor_cap_by_hand():
    frame = _frame({"A": [1.0, 1.0], "B": [1.0, -1.0], "C": [0.5, 0.5]})
    loadings = {"value": {"A": 1.0, "B": 0.5}}  # C loads 0
    cfg = GuardrailsConfig(factor_caps={"value": 0.25}, factor_loadings=loadings)
    adjusted, breaches = apply_guardrails(frame, cfg)
    # bar 0: (1 + 0.5) / 3 = 0.5 > 0.25 → every position × 0.5; bar 1: (1 − 0.5) / 3 = 0.167
    np.testing.assert_allclose(adjusted["position"].iloc[:3], [0.5, 0.5, 0.25])
    np.testing.assert_allclose(adjusted["position"].iloc[3:], [1.0, -1.0, 0.5])
    assert breaches["rule"].unique().tolist() == ["factor_cap"]
    assert breaches["detail"].str.startswith("value exposure 0.5 > cap 0.25").all()


def test_market_beta_cap_uses_past_returns_only():
    rng = np.random.default_rng(0)
    n = 80
    market = rng.normal(0.0, 0.01, n)
    # A moves twice the market, B against it: betas 2 and −1, known once 10 returns are in
    frame = _frame({"A": [1.0] * n, "B": [1.0] * n}, {"A": 2 * market, "B": -market})
    frame["benchmark_return"] = np.repeat(market, 2)
    cfg = GuardrailsConfig(factor_caps={"market_beta": 0.2}, beta_window=10)
    adjusted, breaches = apply_guardrails(frame, cfg)
    a, b = _pos(adjusted, "A"), _pos(adjusted, "B")
    # first 10 bars: betas unknown, taken as 1 → exposure (1 + 1) / 2 = 1 → × 0.2
    np.testing.assert_allclose(a[:10], 0.2)
    # from bar 10 (returns of bars 0..9, earned by bar 10, known): exposure (2 − 1) / 2 = 0.5
    np.testing.assert_allclose(a[10:], 0.4)
    np.testing.assert_allclose(b[10:], 0.4)
    assert breaches["rule"].unique().tolist() == ["factor_cap"]
    # without a benchmark column the market is the cross-sectional mean (0.5 × market):
    # betas 4 and −2 → exposure 1 → × 0.2
    adjusted, _ = apply_guardrails(frame.drop(columns="benchmark_return"), cfg)
    np.testing.assert_allclose(_pos(adjusted, "A")[10:], 0.2)
    with pytest.raises(ValueError, match="did you mean 'market_beta'"):
        GuardrailsConfig(factor_caps={"market_beat": 0.5})
    with pytest.raises(ValueError, match="realised_return"):
        apply_guardrails(frame.drop(columns="realised_return"), cfg)


def test_market_beta_of_a_symbol_that_skips_bars_uses_its_own_rows():
    rng = np.random.default_rng(3)
    n = 200
    stamps = pd.date_range("2024-01-01", periods=n, freq="D", tz="UTC")
    market = rng.normal(0.0, 0.01, n)
    rows = [pd.DataFrame({"timestamp": stamps, "symbol": "A", "benchmark_return": market})]
    keep = np.flatnonzero(np.arange(n) % 5 != 4)  # B skips every fifth bar (a weekend)
    span = np.add.reduceat(market, keep)  # the market from each B row to B's next row
    rows.append(pd.DataFrame({"timestamp": stamps[keep], "symbol": "B", "benchmark_return": span}))
    frame = pd.concat(rows).sort_values(["timestamp", "symbol"], ignore_index=True)
    frame["realised_return"] = 2.0 * frame["benchmark_return"]  # both have beta 2
    frame["position"] = 1.0
    cfg = GuardrailsConfig(factor_caps={"market_beta": 0.5}, beta_window=20)
    adjusted, _ = apply_guardrails(frame, cfg)
    # once each symbol has 20 known returns of its own: exposure 2 · mean(p) → × 0.25
    late = adjusted["timestamp"] >= stamps[40]
    np.testing.assert_allclose(adjusted.loc[late, "position"], 0.25)


def test_turnover_cap_by_hand():
    frame = _frame({"A": [1.0, 1.0, -1.0, -1.0]})
    adjusted, breaches = apply_guardrails(frame, GuardrailsConfig(max_turnover=0.5))
    # 0 → 1 capped at 0.5; 0.5 → 1 allowed; 1 → -1 capped at 0.5; 0.5 → -1 capped at 0.0
    np.testing.assert_allclose(_pos(adjusted, "A"), [0.5, 1.0, 0.5, 0.0])
    assert (breaches["rule"] == "max_turnover").sum() == 3


def test_drawdown_stop_until_recovery_and_for_n_bars():
    returns = [-0.1, -0.1, 0.05, 0.3, 0.0, 0.0]
    frame = _frame({"A": [1.0] * 6}, {"A": returns})
    # wealth at bars: 1, .9, .81 (dd −19%), .8505 (dd −15%), 1.106 (new peak), …
    adjusted, breaches = apply_guardrails(frame, GuardrailsConfig(drawdown_stop=0.15))
    np.testing.assert_allclose(_pos(adjusted, "A"), [1, 1, 0, 0, 1, 1])
    assert breaches["rule"].tolist() == ["drawdown_stop"] * 2
    cfg = GuardrailsConfig(drawdown_stop=0.15, drawdown_resume=0.16)
    adjusted, _ = apply_guardrails(frame, cfg)
    np.testing.assert_allclose(_pos(adjusted, "A"), [1, 1, 0, 1, 1, 1])
    adjusted, _ = apply_guardrails(
        frame, GuardrailsConfig(drawdown_stop=0.15, drawdown_stop_bars=1)
    )
    np.testing.assert_allclose(_pos(adjusted, "A"), [1, 1, 0, 1, 1, 1])


def test_cvar_derisk_by_hand():
    returns = [0.01] * 12
    returns[2] = -0.05
    frame = _frame({"A": [1.0] * 12}, {"A": returns})
    cfg = GuardrailsConfig(cvar_limit=0.03, cvar_window=5, cvar_alpha=0.2, cvar_derisk=0.5)
    adjusted, breaches = apply_guardrails(frame, cfg)
    # at bar t the window holds r_{t-5} .. r_{t-1} (a full window from bar 4); r_2 = −5%
    # is in it for t = 4 .. 7 (worst-1 CVaR = −5% beyond the 3% limit)
    expected = np.ones(12)
    expected[4:8] = 0.5
    np.testing.assert_allclose(_pos(adjusted, "A"), expected)
    assert breaches["rule"].unique().tolist() == ["cvar"]


def test_every_rule_is_causal():
    rng = np.random.default_rng(4)
    n, symbols = 300, ["A", "B", "C", "D"]
    frame = _frame(
        {s: rng.uniform(-1.5, 1.5, n) for s in symbols},
        {s: rng.normal(0.0, 0.03, n) for s in symbols},
    )
    cfg = GuardrailsConfig(
        max_gross=0.7,
        max_net=0.4,
        max_turnover=0.6,
        max_sector_gross=0.4,
        factor_caps={"market_beta": 0.3},
        beta_window=20,
        cvar_limit=0.01,
        cvar_window=20,
        drawdown_stop=0.05,
    )
    sectors = {"A": "x", "B": "x", "C": "y", "D": "y"}
    before, breaches = apply_guardrails(frame, cfg, sectors)
    rules = {"cvar", "drawdown_stop", "max_turnover", "sector_cap", "factor_cap"}
    assert rules <= set(breaches["rule"])
    cut = frame["timestamp"].unique()[150]
    perturbed = frame.copy()
    later = perturbed["timestamp"] >= cut
    perturbed.loc[later, "realised_return"] = rng.normal(0.0, 0.2, later.sum())
    after, _ = apply_guardrails(perturbed, cfg, sectors)
    seen = (frame["timestamp"] <= cut).to_numpy()
    np.testing.assert_array_equal(before["position"][seen], after["position"][seen])
    assert not np.allclose(before["position"][~seen], after["position"][~seen])


def test_sectors_from_assets_and_errors(tmp_path):
    assets = pd.DataFrame({"asset_id": [1, 2], "symbol": ["A", "B"], "sector": ["tech", None]})
    db = write_database(tmp_path / "m.db", {"assets": assets})
    assert sectors_from_assets(db) == {"A": "tech"}
    frame = _frame({"A": [1.0], "B": [1.0]})
    with pytest.raises(ValueError, match="did you mean 'tech'"):
        apply_guardrails(frame, GuardrailsConfig(sector_caps={"tec": 0.2}), {"A": "tech"})
    with pytest.raises(ValueError, match="need sectors"):
        apply_guardrails(frame, GuardrailsConfig(max_sector_gross=0.2))
    with pytest.raises(ValueError, match="realised_return"):
        apply_guardrails(frame.drop(columns="realised_return"), GuardrailsConfig(cvar_limit=0.1))
    unchanged, none = apply_guardrails(frame, GuardrailsConfig(**OFF))
    assert none.empty and list(none.columns) == BREACH_COLUMNS
    np.testing.assert_array_equal(unchanged["position"], [1.0, 1.0])
