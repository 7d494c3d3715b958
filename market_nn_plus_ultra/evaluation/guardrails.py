"""Risk guardrails on target positions: exposure, sector, factor, turnover, tail, drawdown.

Rules run in this order on a predictions frame (one row per (timestamp, symbol)); each
change is logged as a breach row ``(timestamp, symbol, rule, before, after, detail)``.
Exposures are fractions of capital under the backtest's equal capital per symbol: with
``n_t`` symbols at bar t, gross = Σ|p| / n_t, net = Σp / n_t, a sector's gross =
Σ_{sector}|p| / n_t.

1. ``max_position``: clip each |position|.
2. ``sector_cap``: scale a sector's positions so its gross stays within its cap.
3. ``factor_cap``: scale every position at the bar so each capped factor's net exposure
   |Σ_s L_{f,s} p_s| / n_t stays within its cap. ``market_beta`` loadings are each
   symbol's rolling beta on the market return (``benchmark_return`` where present, else the
   cross-sectional mean return) over the symbol's last ``beta_window`` returns realised by
   t (taken as 1 until that many are known); other factors' loadings are static
   (``factor_loadings``).
4. ``max_gross`` / ``max_net``: scale every position at the bar.
5. ``cvar``: the *guide* strategy (positions after rules 1–4) earns
   r_t = mean_s(p_t · realised_return_t) over (t, t+1]. At bar t the CVaR of
   r_{t-W} .. r_{t-1} — returns already realised by t — is compared with the limit; over it,
   positions are multiplied by ``cvar_derisk``.
6. ``drawdown_stop``: the guide's wealth Π_{s<t}(1 + r_s) (known at t) in a drawdown
   deeper than ``drawdown_stop`` flattens the book until the drawdown is back above
   ``−drawdown_resume``, or for exactly ``drawdown_stop_bars`` bars (the peak then restarts).
7. ``max_turnover``: mean |Δposition| per bar above the cap moves every symbol the same
   fraction of the way to its target (a flatten from rule 5 is never slowed).

The risk signals of rules 3, 5 and 6 are read from the guide strategy rather than the guarded one,
so a de-risk cannot hide the very losses that triggered it, and every decision at t uses
realised returns up to t − 1 only.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Mapping
from pathlib import Path

import numba
import numpy as np
import pandas as pd

from ..config import GuardrailsConfig
from .backtest import require_columns

__all__ = ["BREACH_COLUMNS", "apply_guardrails", "sectors_from_assets"]

BREACH_COLUMNS = ["timestamp", "symbol", "rule", "before", "after", "detail"]
_TOL = 1e-12


def sectors_from_assets(db: str | Path) -> dict[str, str]:
    """``{symbol: sector}`` from the database's ``assets`` table (symbols without one left out)."""
    from ..data.store import read_table

    assets = read_table(db, "assets", parse_time=False)
    if "sector" not in assets.columns:
        raise ValueError(f"{db}: table `assets` has no `sector` column — re-import the assets")
    assets = assets.dropna(subset=["sector"])
    return dict(zip(assets["symbol"].astype(str), assets["sector"].astype(str), strict=True))


class _Log:
    """Collects breach rows rule by rule (vectorised: one block per rule)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.stamps = pd.DatetimeIndex(frame["timestamp"])
        self.symbols = frame["symbol"].to_numpy()
        self.blocks: list[pd.DataFrame] = []

    def add(
        self, rule: str, before: np.ndarray, after: np.ndarray, *detail: str | np.ndarray
    ) -> None:
        """Log the rows ``rule`` changed; ``detail`` parts are text or per-row values.

        Per-row values (numbers or labels) are formatted for the changed rows only.
        """
        changed = np.abs(after - before) > _TOL
        if not changed.any():
            return
        text = pd.Series("", index=np.flatnonzero(changed), dtype=object)
        for part in detail:
            if isinstance(part, str):
                text = text + part
            elif part.dtype.kind == "f":
                # format each distinct value once: a bar-level measure (turnover, gross)
                # repeats for every symbol of the bar, and str() per row dominated the rule
                uniq, inverse = np.unique(np.round(part[changed], 4), return_inverse=True)
                labels = pd.Series(uniq).astype(str).to_numpy(dtype=object)[inverse]
                text = text + pd.Series(labels, index=text.index)
            else:
                text = text + pd.Series(part[changed], index=text.index).astype(str)
        self.blocks.append(
            pd.DataFrame(
                {
                    "timestamp": self.stamps[changed],
                    "symbol": self.symbols[changed],
                    "rule": rule,
                    "before": before[changed],
                    "after": after[changed],
                    "detail": text.to_numpy(dtype=object),
                }
            )
        )

    def frame(self) -> pd.DataFrame:
        if not self.blocks:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in BREACH_COLUMNS})
        return pd.concat(self.blocks, ignore_index=True)


def _per_bar(codes: np.ndarray, values: np.ndarray, n_bars: int) -> np.ndarray:
    return np.bincount(codes, weights=values, minlength=n_bars)


def _sector_caps(
    frame: pd.DataFrame,
    pos: np.ndarray,
    count: np.ndarray,
    cfg: GuardrailsConfig,
    sectors: Mapping[str, str] | None,
    log: _Log,
) -> np.ndarray:
    if cfg.max_sector_gross is None and not cfg.sector_caps:
        return pos
    if not sectors:
        raise ValueError(
            "guardrails.sector_caps / max_sector_gross need sectors: pass a {symbol: sector} "
            "mapping or read it from the database (sectors_from_assets)"
        )
    known = sorted(set(sectors.values()))
    for name in cfg.sector_caps:
        if name not in known:
            guess = difflib.get_close_matches(name, known, n=1)
            hint = f" — did you mean {guess[0]!r}?" if guess else ""
            raise ValueError(
                f"guardrails.sector_caps: unknown sector {name!r}{hint} Sectors: {known}."
            )
    sector = frame["symbol"].map(dict(sectors))
    default = np.inf if cfg.max_sector_gross is None else cfg.max_sector_gross
    cap = sector.map(cfg.sector_caps).astype(float).fillna(default).to_numpy().copy()
    cap[sector.isna().to_numpy()] = np.inf  # symbols without a sector are not capped
    share = np.abs(pos) / count
    gross = pd.Series(share).groupby([frame["timestamp"], sector.fillna("")]).transform("sum")
    gross = gross.to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(gross > cap, cap / gross, 1.0)
    after = pos * factor
    names = sector.fillna("").to_numpy(dtype=object)
    log.add("sector_cap", pos, after, "sector ", names, " gross ", gross, " > cap ", cap)
    return after


def _market_betas(frame: pd.DataFrame, t_codes: np.ndarray, window: int) -> np.ndarray:
    """Per row: the symbol's beta on the market over its last ``window`` returns known at t.

    Each symbol is fitted on its own rows (a symbol that skips bars, like an equity next
    to crypto at weekends, still has a full window). ``realised_return`` on a row is
    earned up to the symbol's next row, so both series are shifted one row within the
    symbol before the rolling fit. The market on a row is its ``benchmark_return`` where
    present, else the mean ``realised_return`` of the symbols at that bar.
    """
    require_columns(frame, ["realised_return"], "predictions (guardrails factor_caps.market_beta)")
    ret = frame["realised_return"].to_numpy(dtype=np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a bar with no returns at all
        market = pd.Series(ret).groupby(t_codes).transform("mean").to_numpy()
    if "benchmark_return" in frame.columns:
        bench = frame["benchmark_return"].to_numpy(dtype=np.float64)
        market = np.where(np.isnan(bench), market, bench)
    symbol = frame["symbol"].to_numpy()
    known = pd.DataFrame({"x": ret, "m": market}).groupby(symbol, sort=False).shift(1)
    valid = known.notna().all(axis=1)
    x, m = known["x"].where(valid, 0.0), known["m"].where(valid, 0.0)
    parts = pd.DataFrame({"n": valid.astype(np.float64), "x": x, "m": m, "xm": x * m, "mm": m * m})
    sums = parts.groupby(symbol, sort=False).rolling(window, min_periods=window).sum()
    sums = sums.reset_index(level=0, drop=True).reindex(parts.index)
    n = sums["n"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        cov = sums["xm"].to_numpy() - sums["x"].to_numpy() * sums["m"].to_numpy() / n
        var = sums["mm"].to_numpy() - sums["m"].to_numpy() ** 2 / n
        beta = cov / var
    full = (n == window) & (var > 0) & np.isfinite(beta)
    return np.where(full, beta, 1.0)  # too little history: a market-like asset


def _factor_caps(
    frame: pd.DataFrame,
    codes: np.ndarray,
    pos: np.ndarray,
    n: np.ndarray,
    cfg: GuardrailsConfig,
    log: _Log,
) -> np.ndarray:
    for name, cap in cfg.factor_caps.items():
        if name == "market_beta" and name not in cfg.factor_loadings:
            loading = _market_betas(frame, codes, cfg.beta_window)
        else:
            static = cfg.factor_loadings[name]
            loading = frame["symbol"].map(static).astype(float).fillna(0.0).to_numpy()
        exposure = _per_bar(codes, loading * pos, len(n)) / n
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.where(np.abs(exposure) > cap, cap / np.abs(exposure), 1.0)
        after = pos * factor[codes]
        log.add("factor_cap", pos, after, f"{name} exposure ", exposure[codes], f" > cap {cap:g}")
        pos = after
    return pos


def _scale_exposure(
    codes: np.ndarray, pos: np.ndarray, n: np.ndarray, cfg: GuardrailsConfig, log: _Log
) -> np.ndarray:
    for rule, cap, measure in (
        ("max_gross", cfg.max_gross, lambda p: _per_bar(codes, np.abs(p), len(n)) / n),
        ("max_net", cfg.max_net, lambda p: np.abs(_per_bar(codes, p, len(n))) / n),
    ):
        if cap is None:
            continue
        level = measure(pos)
        with np.errstate(divide="ignore", invalid="ignore"):
            factor = np.where(level > cap, cap / level, 1.0)
        after = pos * factor[codes]
        word = "gross" if rule == "max_gross" else "|net|"
        log.add(rule, pos, after, f"{word} exposure ", level[codes], f" > {cap:g}")
        pos = after
    return pos


def _rolling_cvar(past: np.ndarray, window: int, alpha: float) -> np.ndarray:
    """CVaR (mean of the worst share ``alpha``, as metrics.cvar) of ``past[t-W+1 .. t]``."""
    out = np.full(len(past), np.nan)
    if len(past) < window:
        return out
    views = np.lib.stride_tricks.sliding_window_view(past, window)  # (T-W+1, W), no copy
    k = int((window - 1) * alpha)
    worst = np.partition(views, k, axis=1)[:, : k + 1]
    out[window - 1 :] = worst.mean(axis=1)
    return out


def _stop_flags(wealth: np.ndarray, cfg: GuardrailsConfig) -> np.ndarray:
    """Per bar: True while the drawdown stop keeps the book flat."""
    limit = -float(cfg.drawdown_stop)
    if cfg.drawdown_stop_bars is None:
        peak = np.maximum.accumulate(wealth)
        dd = wealth / peak - 1.0
        state = pd.Series(
            np.where(dd < limit, 1.0, np.where(dd >= -cfg.drawdown_resume, 0.0, np.nan))
        )
        return state.ffill().fillna(0.0).to_numpy(dtype=bool)
    flags = np.zeros(len(wealth), dtype=bool)
    start = 0
    while start < len(wealth):  # one pass per stop event; each event skips N bars
        segment = wealth[start:]
        dd = segment / np.maximum.accumulate(segment) - 1.0
        hits = np.flatnonzero(dd < limit)
        if not len(hits):
            break
        begin = start + int(hits[0])
        flags[begin : begin + cfg.drawdown_stop_bars] = True
        start = begin + cfg.drawdown_stop_bars
    return flags


@numba.njit(cache=True, nogil=True)
def _turnover_kernel(target, forced, cap):  # pragma: no cover - compiled
    """Cap each bar's turnover ``mean_s |target − held|`` at ``cap``, bar by bar.

    ``target``/``forced`` are ``[n_bars, S]`` (NaN = symbol absent). Sequential by
    nature: the cap limits the move from the *adjusted* previous position, so each bar
    depends on the last; one compiled pass instead of a Python loop over bars. Returns
    the adjusted targets and each bar's requested turnover (NaN on an empty bar).
    """
    n_bars, n_symbols = target.shape
    held = np.zeros(n_symbols)
    adjusted = target.copy()
    level = np.full(n_bars, np.nan)
    for t in range(n_bars):
        total, count = 0.0, 0
        for s in range(n_symbols):
            if not np.isnan(target[t, s]):
                total += abs(target[t, s] - held[s])
                count += 1
        if count == 0:
            continue
        turnover = total / count
        level[t] = turnover
        for s in range(n_symbols):
            if np.isnan(target[t, s]):
                continue
            if turnover > cap:
                if forced[t, s]:
                    adjusted[t, s] = 0.0
                else:
                    adjusted[t, s] = held[s] + (target[t, s] - held[s]) * cap / turnover
            held[s] = adjusted[t, s]
    return adjusted, level


def _limit_turnover(
    frame: pd.DataFrame, pos: np.ndarray, flat: np.ndarray, cap: float, log: _Log
) -> np.ndarray:
    t_codes, _ = pd.factorize(frame["timestamp"], sort=True)
    s_codes, symbols = pd.factorize(frame["symbol"], sort=True)
    n_bars = int(t_codes.max()) + 1
    target = np.full((n_bars, len(symbols)), np.nan)
    target[t_codes, s_codes] = pos
    forced = np.zeros_like(target, dtype=bool)
    forced[t_codes, s_codes] = flat
    adjusted, level = _turnover_kernel(target, forced, float(cap))
    after = adjusted[t_codes, s_codes]
    log.add("max_turnover", pos, after, "turnover ", level[t_codes], f" > {cap:g}: trades scaled")
    return after


def apply_guardrails(
    predictions: pd.DataFrame,
    cfg: GuardrailsConfig,
    sectors: Mapping[str, str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the configured limits to ``predictions.position``.

    ``predictions``: rows ``timestamp, symbol, position`` (+ ``realised_return``, needed
    by the CVaR, drawdown and market-beta rules: the return from t to t+1; and
    ``benchmark_return``, the market of the beta where present). ``sectors``:
    ``{symbol: sector}`` for the sector caps. Returns the adjusted copy (sorted by
    timestamp, symbol; other columns kept) and the breaches frame (``BREACH_COLUMNS``).
    """
    if isinstance(predictions.index, pd.MultiIndex):
        predictions = predictions.reset_index()
    require_columns(predictions, ["timestamp", "symbol", "position"])
    frame = predictions.sort_values(["timestamp", "symbol"], kind="stable").reset_index(drop=True)
    pos = frame["position"].to_numpy(dtype=np.float64).copy()
    if np.isnan(pos).any():
        raise ValueError(f"predictions.position: {int(np.isnan(pos).sum())} NaN positions")
    log = _Log(frame)
    codes, _ = pd.factorize(frame["timestamp"], sort=True)
    n_bars = int(codes.max()) + 1 if len(codes) else 0
    n = np.bincount(codes, minlength=n_bars).astype(np.float64)

    if cfg.max_position is not None:
        after = np.clip(pos, -cfg.max_position, cfg.max_position)
        log.add("max_position", pos, after, "|position| ", pos, f" > {cfg.max_position:g}")
        pos = after
    pos = _sector_caps(frame, pos, n[codes], cfg, sectors, log)
    pos = _factor_caps(frame, codes, pos, n, cfg, log)
    pos = _scale_exposure(codes, pos, n, cfg, log)

    flat = np.zeros(len(pos), dtype=bool)
    if cfg.cvar_limit is not None or cfg.drawdown_stop is not None:
        require_columns(frame, ["realised_return"], "predictions (guardrails cvar/drawdown)")
        ret = np.nan_to_num(frame["realised_return"].to_numpy(dtype=np.float64), nan=0.0)
        guide = _per_bar(codes, pos * ret, n_bars) / n  # r_t, earned over (t, t+1]
        past = np.concatenate([[0.0], guide[:-1]])  # at bar t: r_{t-1}, known at t
        if cfg.cvar_limit is not None:
            loss = -_rolling_cvar(past, cfg.cvar_window, cfg.cvar_alpha)
            hit = np.nan_to_num(loss, nan=0.0) > cfg.cvar_limit
            after = np.where(hit[codes], pos * cfg.cvar_derisk, pos)
            limit = f" > {cfg.cvar_limit:g}"
            log.add("cvar", pos, after, f"CVaR{cfg.cvar_alpha:g} loss ", loss[codes], limit)
            pos = after
        if cfg.drawdown_stop is not None:
            wealth = np.cumprod(1.0 + past)  # wealth at bar t from returns up to t-1
            stop = _stop_flags(wealth, cfg)
            dd = wealth / np.maximum.accumulate(wealth) - 1.0
            flat = stop[codes]
            after = np.where(flat, 0.0, pos)
            limit = f" beyond -{cfg.drawdown_stop:g}: flat"
            log.add("drawdown_stop", pos, after, "drawdown ", dd[codes], limit)
            pos = after
    if cfg.max_turnover is not None and len(pos):
        pos = _limit_turnover(frame, pos, flat, cfg.max_turnover, log)
    adjusted = frame.copy()
    adjusted["position"] = pos
    return adjusted, log.frame()
