"""Compiled single-pass loops behind the recursive and rolling features.

Each kernel walks one symbol's float64 array once, in time order, so the value at row
``t`` is computed from rows ``<= t`` only and identically for any prefix of the series
(causality holds bit for bit). They are ``numba`` functions compiled on first use and
cached on disk (``cache=True``: one compile per machine), and they release the GIL
(``nogil=True``) so the pipeline's per-symbol thread pool runs them in parallel.

NaN handling matches the numpy definitions they replace: a NaN poisons a recursion
from its row on, and a rolling window only while the NaN sits inside it. Rolling
statistics update in O(1) per row (Welford's update for mean/variance, running power
sums about a local centre for higher moments) and are recomputed exactly from the
window every ``_REFRESH`` rows, after a NaN leaves the window, and whenever the window
is flat, so rounding never accumulates along a long series.
"""

from __future__ import annotations

import numba
import numpy as np

_REFRESH = 1024  # rows between exact recomputations of a rolling window's statistics
_jit = numba.njit(cache=True, nogil=True, fastmath={"contract"}, error_model="numpy")


@_jit
def _nan_head(out, first):
    """Set rows ``< first`` of ``out`` to NaN (the kernels write every later row once)."""
    out[: min(max(first, 0), out.shape[0])] = np.nan


@_jit
def _seeded_ema(x, alpha, period, start, out):
    """``y_t = (1-alpha)·y_{t-1} + alpha·x_t`` seeded with mean(x[start:start+period])."""
    n = x.shape[0]
    first = start + period - 1
    if start < 0 or n <= first:
        _nan_head(out, n)
        return
    _nan_head(out, first)
    seed = 0.0
    for i in range(start, first + 1):
        seed += x[i]
    y = seed / period
    out[first] = y
    beta = 1.0 - alpha
    for i in range(first + 1, n):
        y = beta * y + alpha * x[i]
        out[i] = y


@_jit
def _rsi(close, period, out):
    """Wilder RSI with TA-Lib's seed; gains and losses of the changes in one pass.

    Branch-free: gain = max(d, 0) by a select, loss = gain - d. A NaN change makes the
    loss (hence every later RSI) NaN, as the numpy definition does.
    """
    n = close.shape[0]
    if n <= period:
        _nan_head(out, n)
        return
    _nan_head(out, period)
    alpha = 1.0 / period
    beta = 1.0 - alpha
    gain = 0.0
    loss = 0.0
    for i in range(1, period + 1):
        d = close[i] - close[i - 1]
        g = d if d > 0.0 else 0.0
        gain += g
        loss += g - d
    gain /= period
    loss /= period
    total = gain + loss
    out[period] = 50.0 if total == 0.0 else gain / total * 100.0
    for i in range(period + 1, n):
        d = close[i] - close[i - 1]
        g = d if d > 0.0 else 0.0
        gain = beta * gain + alpha * g
        loss = beta * loss + alpha * (g - d)
        total = gain + loss
        out[i] = 50.0 if total == 0.0 else gain / total * 100.0


@_jit
def _macd(close, fast, slow, signal, line, sig, hist):
    """MACD line, signal and histogram with TA-Lib's seeding and alignment, in one pass."""
    n = close.shape[0]
    start = slow - 1  # both price EMAs start here
    first = start + signal - 1  # the signal's seed, and the first output row
    for out in (line, sig, hist):
        _nan_head(out, first)
    if n <= first:
        return
    a_fast, a_slow, a_sig = 2.0 / (fast + 1), 2.0 / (slow + 1), 2.0 / (signal + 1)
    b_fast, b_slow, b_sig = 1.0 - a_fast, 1.0 - a_slow, 1.0 - a_sig
    s_fast = 0.0
    s_slow = 0.0
    for i in range(slow):
        s_slow += close[i]
        if i >= slow - fast:
            s_fast += close[i]
    ef = s_fast / fast
    es = s_slow / slow
    acc = ef - es
    for i in range(start + 1, first + 1):
        ef = b_fast * ef + a_fast * close[i]
        es = b_slow * es + a_slow * close[i]
        acc += ef - es
    m = ef - es
    s = acc / signal
    line[first], sig[first], hist[first] = m, s, m - s
    for i in range(first + 1, n):
        c = close[i]
        ef = b_fast * ef + a_fast * c
        es = b_slow * es + a_slow * c
        m = ef - es
        s = b_sig * s + a_sig * m
        line[i], sig[i], hist[i] = m, s, m - s


@_jit
def _true_range(high, low, close, i):
    """``max(high_i, close_{i-1}) - min(low_i, close_{i-1})``, NaN if any input is NaN."""
    h, lo, p = high[i], low[i], close[i - 1]
    # The select keeps the bar's own value when the comparison fails, so a NaN high or
    # low carries through as np.maximum/np.minimum would; only the close needs a check.
    tr = (p if p > h else h) - (p if p < lo else lo)
    return tr if p == p else np.nan


@_jit
def _atr(high, low, close, period, out):
    """True range and its Wilder average (TA-Lib's SMA seed at bar ``period``) in one pass."""
    n = close.shape[0]
    if n <= period:
        _nan_head(out, n)
        return
    _nan_head(out, period)
    alpha = 1.0 / period
    beta = 1.0 - alpha
    y = 0.0
    for i in range(1, period + 1):
        y += _true_range(high, low, close, i)
    y /= period
    out[period] = y
    for i in range(period + 1, n):
        y = beta * y + alpha * _true_range(high, low, close, i)
        out[i] = y


@_jit
def _window_mean_m2(x, t, window):
    """Exact statistics of the window ``x[t-window+1 : t+1]`` about the centre ``x[t]``.

    Returns ``(centre, mean of x - centre, sum of squared deviations)``. The centre is a
    data value, so every ``x - centre`` near it is exact and the mean of the differences
    carries only its own rounding — Welford's update needs that mean to be exact, or the
    error feeds the variance at every step.
    """
    centre = x[t]
    mean = 0.0
    for j in range(t - window + 1, t + 1):
        mean += x[j] - centre
    mean /= window
    m2 = 0.0
    for j in range(t - window + 1, t + 1):
        d = x[j] - centre - mean
        m2 += d * d
    return centre, mean, m2


MEAN_STD, SCALED_CV, ZSCORE = 0, 1, 2  # what _rolling_mean_std writes (see its docstring)


@_jit
def _rolling_mean_std(x, window, ddof, kind, scale, a, b):
    """Trailing mean and std (``ddof``) by Welford's rolling update with exact refreshes.

    ``kind`` picks the outputs so that a feature costs one pass: ``MEAN_STD`` writes the
    mean to ``a`` and the std to ``b``; ``SCALED_CV`` writes ``scale·std/mean`` to ``a``
    (Bollinger width); ``ZSCORE`` writes ``(x - mean)/std`` to ``a``, 0 where std is 0.
    A window holding a non-finite value is NaN.

    Rows go in blocks of ``_REFRESH``: the sequential update fills a block of means and
    variances, then branch-free loops over the block (which the compiler vectorises)
    take the square roots and ratios, off the recursion's critical path.
    """
    n = x.shape[0]
    means = np.empty(_REFRESH)
    stds = np.empty(_REFRESH)
    last_bad = -1  # a window is complete and clean once t - last_bad >= window
    run = 0  # length of the current run of identical values (flat windows are exact)
    prev = np.nan
    fresh = True
    centre = 0.0  # a value of the window at the last refresh; the update runs on x - centre
    mean = 0.0  # mean of x - centre over the window
    m2 = 0.0
    inv_w = 1.0 / window
    inv_dof = 1.0 / (window - ddof)
    for start in range(0, n, _REFRESH):
        stop = min(start + _REFRESH, n)
        if window > 1 and start - last_bad >= window and _plain_block(x, start, stop):
            # Every window ending in the block is finite and none is flat: the update
            # needs no per-row checks (same arithmetic as the careful loop below).
            centre, mean, m2 = _window_mean_m2(x, start, window)
            means[0] = centre + mean
            stds[0] = max(m2 * inv_dof, 0.0)
            for t in range(start + 1, stop):
                mean, m2 = _welford(x, t, window, centre, mean, m2, inv_w)
                means[t - start] = centre + mean
                stds[t - start] = max(m2 * inv_dof, 0.0)
            run, prev, fresh = 1, x[stop - 1], False
            _finish_block(x, start, stop, kind, scale, means, stds, a, b)
            continue
        for t in range(start, stop):
            v = x[t]
            run = run + 1 if v == prev else 1  # a select, not a branch; NaN never equals
            prev = v
            if v - v != 0.0:  # NaN or ±inf
                last_bad = t
                fresh = True
            if t - last_bad < window:
                means[t - start] = np.nan
                stds[t - start] = np.nan
                continue
            if run >= window:
                centre, mean, m2 = v, 0.0, 0.0
                fresh = True  # leaving the flat stretch restarts from an exact window
            elif fresh or t == start:
                centre, mean, m2 = _window_mean_m2(x, t, window)
                fresh = False
            else:
                mean, m2 = _welford(x, t, window, centre, mean, m2, inv_w)
            means[t - start] = centre + mean
            stds[t - start] = max(m2 * inv_dof, 0.0)  # the variance, until the block ends
        _finish_block(x, start, stop, kind, scale, means, stds, a, b)


@_jit
def _plain_block(x, start, stop):
    """True when ``x[start:stop]`` (``start > 0``) is all finite with no value equal to
    the one before it — no row of the block can start or extend a flat run."""
    flags = 0
    for t in range(start, stop):
        v = x[t]
        flags += (v - v != 0.0) | (v == x[t - 1])  # branch-free, so it vectorises
    return flags == 0


@_jit
def _welford(x, t, window, centre, mean, m2, inv_w):
    """One step of Welford's rolling update as row ``t`` enters and ``t - window`` leaves.

    Runs on values centred near the window: a price far from zero would otherwise lose
    the mean's low digits at every step. Returns the new (mean of x - centre, m2).
    """
    dv = x[t] - centre
    do = x[t - window] - centre
    new_mean = mean + (dv - do) * inv_w
    m2 += (dv - do) * (dv - new_mean + do - mean)
    return new_mean, m2


@_jit
def _finish_block(x, start, stop, kind, scale, means, stds, a, b):
    """Write rows ``start:stop`` of the requested outputs from a block's statistics."""
    m = stop - start
    for i in range(m):
        stds[i] = np.sqrt(stds[i])
    if kind == MEAN_STD:
        a[start:stop] = means[:m]
        b[start:stop] = stds[:m]
    elif kind == SCALED_CV:
        for i in range(m):
            a[start + i] = scale * stds[i] / means[i]
    else:
        for i in range(m):
            z = (x[start + i] - means[i]) / stds[i]
            a[start + i] = z if stds[i] != 0.0 else 0.0  # NaN std (no window) stays NaN


@_jit
def _power_sums(x, t, window):
    """Window centre c and the sums of (x - c)^k, k = 1..4, over ``x[t-window+1 : t+1]``."""
    c = 0.0
    for j in range(t - window + 1, t + 1):
        c += x[j]
    c /= window
    s1 = s2 = s3 = s4 = 0.0
    for j in range(t - window + 1, t + 1):
        d = x[j] - c
        d2 = d * d
        s1 += d
        s2 += d2
        s3 += d2 * d
        s4 += d2 * d2
    return c, s1, s2, s3, s4


@_jit
def _rolling_moments(x, window, skew, kurt):
    """Trailing bias-corrected skewness G1 and excess kurtosis G2 (pandas' definitions)."""
    n = x.shape[0]
    w = float(window)
    skew_k = np.sqrt(w * (w - 1.0)) / (w - 2.0)
    kurt_a = w * w - 1.0
    kurt_b = 3.0 * (w - 1.0) ** 2
    kurt_d = 1.0 / ((w - 2.0) * (w - 3.0))
    inv_w = 1.0 / w
    last_bad = -1
    fresh = True
    c = s1 = s2 = s3 = s4 = 0.0
    for t in range(n):
        v = x[t]
        if v - v != 0.0:
            last_bad = t
            fresh = True
        if t - last_bad < window:
            skew[t] = np.nan
            kurt[t] = np.nan
            continue
        if fresh or t & (_REFRESH - 1) == 0:
            # Centring on the window mean keeps the power sums small and well conditioned.
            c, s1, s2, s3, s4 = _power_sums(x, t, window)
            fresh = False
        else:
            d = v - c
            e = x[t - window] - c
            d2, e2 = d * d, e * e
            s1 += d - e
            s2 += d2 - e2
            s3 += d2 * d - e2 * e
            s4 += d2 * d2 - e2 * e2
        mu = s1 * inv_w
        mu2 = mu * mu
        e2m, e3m, e4m = s2 * inv_w, s3 * inv_w, s4 * inv_w
        m2 = e2m - mu2
        if not m2 > 1e-14:  # numerically flat window: undefined, as in pandas
            skew[t] = np.nan
            kurt[t] = np.nan
            continue
        m3 = e3m - 3.0 * mu * e2m + 2.0 * mu2 * mu
        m4 = e4m - 4.0 * mu * e3m + 6.0 * mu2 * e2m - 3.0 * mu2 * mu2
        skew[t] = skew_k * m3 / (m2 * np.sqrt(m2))
        kurt[t] = (kurt_a * m4 / (m2 * m2) - kurt_b) * kurt_d


@_jit
def _lag_products(r, t, window, lags):
    """Exact lag products of the window ``r[t-window+1 .. t]`` about its mean c.

    ``lags[d] = Σ (r[m]-c)·(r[m+d]-c)``; returns c and ``Σ (r[m]-c)`` (0 up to rounding).
    """
    lo = t - window + 1
    c = 0.0
    for m in range(lo, t + 1):
        c += r[m]
    c /= window
    s1 = 0.0
    for m in range(lo, t + 1):
        s1 += r[m] - c
    for d in range(window):
        s = 0.0
        for m in range(lo, t - d + 1):
            s += (r[m] - c) * (r[m + d] - c)
        lags[d] = s
    return c, s1


@_jit
def _write_shares(weights, lags, window, white, raw, out, t):
    """The three band powers ``weights @ lags`` as shares at row t (``white`` if none).

    ``raw`` is the window's Σ r²: a band power below 1e-12 of it is rounding, not signal.
    """
    e0 = e1 = e2 = 0.0
    for d in range(window):  # one pass, three accumulators
        x = lags[d]
        e0 += weights[0, d] * x
        e1 += weights[1, d] * x
        e2 += weights[2, d] * x
    e0, e1, e2 = max(e0, 0.0), max(e1, 0.0), max(e2, 0.0)
    total = e0 + e1 + e2
    if total <= 1e-12 * window * raw:  # no power outside the window mean
        out[0, t], out[1, t], out[2, t] = white[0], white[1], white[2]
    else:
        inv = 1.0 / total
        out[0, t], out[1, t], out[2, t] = e0 * inv, e1 * inv, e2 * inv


@_jit
def _band_shares(r, window, weights, white, out):
    """Trailing shares of a window's DFT power per band, from its lag products.

    ``|X_k|² = Σ_{m,n} y_m y_n cos(2πk(m−n)/W)``, so the power of a band of bins is
    ``Σ_d weights[b, d]·R_d`` with ``R_d`` the window's lag-d product sum (``weights``
    holds ``Σ_{k∈b} cos(2πkd/W)``, doubled for d ≥ 1). Bins k ≥ 1 do not change when a
    constant is subtracted, so the products are of ``y = r − c`` about a centre c (the
    window mean at the last exact computation): a drift then cancels nothing. Each
    ``R_d`` slides in O(1): one product enters, one leaves. The sums are recomputed
    exactly every ``_REFRESH`` rows, after a NaN leaves the window, when the window's
    energy falls 10⁴-fold below the last exact value, and when its mean has moved from c
    by more than its spread, so rounding never builds up. A window with no power outside
    its mean (flat prices, a constant drift) gets ``white``. ``out`` is (3, n): low, mid,
    high.
    """
    n = r.shape[0]
    lags = np.zeros(window)
    nan_row = np.full(weights.shape[0], np.nan)
    last_bad = -1
    last_move = -1
    fresh = True
    scale = 0.0
    c = s1 = 0.0
    for t in range(n):
        v = r[t]
        if v - v != 0.0:
            last_bad = t
            fresh = True
        elif v != 0.0:
            last_move = t
        if t - last_bad < window or t - last_move >= window:  # NaN inside, or flat window
            out[:, t] = nan_row if t - last_bad < window else white
            fresh = True
            continue
        if not fresh and t & (_REFRESH - 1) != 0:
            old = t - window
            gone = r[old] - c
            new = v - c
            for d in range(window):
                lags[d] += (r[t - d] - c) * new - gone * (r[old + d] - c)
            s1 += new - gone
            fresh = lags[0] < 1e-4 * scale or s1 * s1 > 0.5 * window * lags[0]
        if fresh or t & (_REFRESH - 1) == 0:
            c, s1 = _lag_products(r, t, window, lags)
            scale = lags[0]
            fresh = False
        raw = lags[0] + 2.0 * c * s1 + window * c * c  # Σ r² = Σ (r-c)² + 2cΣ(r-c) + Wc²
        _write_shares(weights, lags, window, white, raw, out, t)
