"""VectorTradingEnv: one bar of the execution simulator per step, training windows,
causality, autoreset and seeding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from gymnasium.vector import AutoresetMode

from market_nn_plus_ultra.config import SimulationConfig
from market_nn_plus_ultra.simulation.execution import effective_targets, simulate_execution
from market_nn_plus_ultra.simulation.step import LatencyBuckets, OrderBook, arrive
from market_nn_plus_ultra.windows import SlidingWindowDataset
from tests.rl._env_cases import FULL, build_setup, make_env, make_market, spread_rows


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A two-symbol daily database, its config and its feature panel (built once)."""
    return build_setup(tmp_path_factory)


# --------------------------------------------------------------------------------------
# The execution simulator, bar by bar
# --------------------------------------------------------------------------------------


def test_fixed_targets_earn_what_simulate_execution_earns(setup):
    market = make_market(setup)
    L, N = 20, 3
    env = make_env(market, setup, n=N, length=L)
    starts = spread_rows(env, N)
    env.reset(options={"start_rows": starts})
    S = env.n_symbols
    targets = torch.rand(N, L, S, generator=torch.Generator().manual_seed(1)) * 2 - 1
    got = {"reward": [], "position": [], "turnover": [], "cost": []}
    for k in range(L):
        _, reward, _, truncated, info = env.step(targets[:, k])
        got["reward"].append(reward)
        got["position"].append(info["final_obs"]["portfolio"][..., 0])  # before the restart
        got["turnover"].append(info["turnover"])
        got["cost"].append(info["cost"])
    assert truncated.all()
    for n, start in enumerate(starts.tolist()):
        rows = slice(start, start + L)

        def grid(values, rows=rows):
            return torch.as_tensor(np.asarray(values)[rows], dtype=torch.float64)[None]

        res = simulate_execution(
            targets[n : n + 1].double(),
            grid(market.returns),
            FULL,
            present=torch.as_tensor(np.asarray(market.tensors.present)[rows])[None],
            volatility=grid(market.volatility),
            dollar_volume=grid(market.dollar_volume),
            adv=grid(market.adv),
            funding=grid(market.funding),
            periods_per_year=market.periods_per_year,
        )
        expected = {
            "reward": res.portfolio[0].nan_to_num(0.0),
            "position": res.positions[0],
            "turnover": res.turnover[0].nan_to_num(0.0),
            "cost": res.portfolio_costs[0].nan_to_num(0.0),
        }
        for key, want in expected.items():
            have = torch.stack([v[n] for v in got[key]]).double()
            torch.testing.assert_close(have, want, rtol=0, atol=1e-6, msg=key)
        # every friction did something on this path
        assert (res.targets[0] - res.positions[0]).abs().max() > 1e-3  # partial fills
        for kind in ("fixed", "spread", "impact", "borrow", "funding"):
            assert res.costs[kind].abs().sum() > 0, kind
        assert (res.targets[0, :2] == 0).all()  # two bars of latency


def test_the_order_book_replays_effective_targets():
    B, T, S = 4, 30, 3
    targets = torch.rand(B, T, S, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    bars, probs = [0, 1, 4], [0.2, 0.5, 0.3]
    initial = torch.zeros(B, S, dtype=torch.float64)
    expected = effective_targets(targets, bars, probs, initial, torch.Generator().manual_seed(9))
    u = torch.rand(B, T, S, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    lag = LatencyBuckets.from_config(bars, probs).draw(u)
    book = OrderBook.empty(initial, max(bars))
    got = [arrive(book, targets[:, t], lag[:, t], torch.full((B,), t)) for t in range(T)]
    torch.testing.assert_close(torch.stack(got, dim=1), expected, rtol=0, atol=0)


# --------------------------------------------------------------------------------------
# Observations
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("normalise", ["window_zscore", "train_zscore", "none"])
def test_windows_are_the_training_windows(setup, normalise):
    market = make_market(setup, normalise=normalise)
    env = make_env(market, setup, n=4, length=5, normalise=normalise)
    starts = spread_rows(env, 4)
    obs, _ = env.reset(options={"start_rows": starts})
    ds = SlidingWindowDataset(
        market.tensors,
        env.window,
        1,
        symbols_per_item="all",
        normalise=normalise,
        normaliser=market.normaliser,
        require_targets=False,
    )
    ends, _ = ds.item_keys()
    for step in range(3):
        rows = starts.numpy() + step
        x = ds.batch(np.searchsorted(ends, rows))["x"]  # (N, S, W, F)
        torch.testing.assert_close(obs["window"], x, rtol=0, atol=1e-6)
        obs, *_ = env.step(torch.zeros(4, env.n_symbols))
    assert obs["window"].shape == (4, env.n_symbols, env.window, env.n_features)


def test_blocked_window_zscore_equals_one_pass(setup, monkeypatch):
    from market_nn_plus_ultra.rl import observe

    market = make_market(setup)
    env = make_env(market, setup, n=40, length=5)
    rows = env.start_rows[torch.randint(len(env.start_rows), (40,))]
    whole = env._windows.gather(rows)
    monkeypatch.setattr(observe, "_BLOCK_ELEMENTS", 1)  # blocks of 16 envs: 16, 16, 8
    torch.testing.assert_close(env._windows.gather(rows), whole, rtol=0, atol=0)


def test_no_observation_sees_a_later_row(setup):
    cfg, panel = setup
    L, N = 16, 2
    base = make_market(setup)
    env = make_env(base, setup, n=N, length=L)
    starts = spread_rows(env, N)
    cut = int(starts.min()) + 6  # rows after `cut` change; bars <= cut must not notice
    stamps = panel.index.get_level_values("timestamp")
    later = stamps > base.tensors.timestamps[cut]
    changed = panel.copy()
    numeric = changed.select_dtypes("number").columns
    rng = np.random.default_rng(5)
    changed.loc[later, numeric] *= rng.uniform(0.5, 1.5, (int(later.sum()), len(numeric)))
    other = make_market((cfg, changed))
    other.funding = base.funding.copy()
    other.funding[cut + 1 :] += 0.01
    actions = torch.rand(L, N, env.n_symbols, generator=torch.Generator().manual_seed(2)) * 2 - 1

    def play(market):
        e = make_env(market, setup, n=N, length=L)
        obs, _ = e.reset(options={"start_rows": starts})
        seen, rewards = [(starts.clone(), obs)], []
        for k in range(L - 1):
            obs, reward, _, _, info = e.step(actions[k])
            seen.append((info["row"].clone(), obs))
            rewards.append(reward)
        return seen, rewards

    (seen_a, _), (seen_b, _) = play(base), play(other)
    checked = differs = 0
    for (rows, a), (_, b) in zip(seen_a, seen_b, strict=True):
        early = rows <= cut
        for key in a:
            if early.any():
                torch.testing.assert_close(a[key][early], b[key][early], rtol=0, atol=0)
                checked += 1
            differs += bool((a[key][~early] != b[key][~early]).any())
    assert checked >= 6 * 2 and differs > 0  # the perturbation reached the later bars


def test_portfolio_channels_follow_the_position(setup):
    market = make_market(setup, simulation=SimulationConfig(cost_bps=0.0), funding=False)
    env = make_env(market, setup, n=1, length=6, simulation=SimulationConfig(cost_bps=0.0))
    start = int(env.start_rows[3])
    env.reset(options={"start_rows": [start]})
    r = torch.as_tensor(market.returns[start : start + 4, 0], dtype=torch.float32)
    plan = [1.0, 1.0, -1.0, 0.0]
    upnl = [r[0], r[0] + r[1], -r[2], 0.0]
    equity = torch.ones(())
    for k, target in enumerate(plan):
        obs, _, _, _, info = env.step(torch.tensor([[target, 0.0]]))
        equity = equity * (1 + info["net_return"][0])
        pos, eq, pnl = obs["portfolio"][0, 0]
        assert pos == target and eq == pytest.approx(float(equity), rel=1e-6)
        assert float(pnl) == pytest.approx(float(upnl[k]), abs=1e-7)
    assert info["net_return"][0] == 0.0  # flat in symbol 0 and symbol 1 earns nothing


# --------------------------------------------------------------------------------------
# Episodes, autoreset and seeding
# --------------------------------------------------------------------------------------


def test_same_step_autoreset_hands_back_the_final_observation(setup):
    market = make_market(setup)
    env = make_env(market, setup, n=4, length=5)
    longer = make_env(market, setup, n=4, length=6)
    starts = spread_rows(longer, 4)
    env.reset(options={"start_rows": starts})
    longer.reset(options={"start_rows": starts})
    nets = []
    actions = torch.full((4, env.n_symbols), 0.5)
    for k in range(5):
        obs, _, terminated, truncated, info = env.step(actions)
        ref, *_ = longer.step(actions)
        nets.append(info["net_return"])
        assert not terminated.any()
        assert bool(truncated.all()) == (k == 4) and (info["_final_obs"] == truncated).all()
    for key in ref:
        torch.testing.assert_close(info["final_obs"][key], ref[key], rtol=0, atol=0)
    expected = torch.stack(nets).add(1).prod(0) - 1
    torch.testing.assert_close(info["episode_return"], expected)
    assert (info["episode_length"] == 5).all()
    assert torch.isin(info["row"], env.start_rows).all()  # new episodes, fresh portfolio
    assert (obs["portfolio"][..., 0] == 0).all() and (obs["portfolio"][..., 1] == 1).all()
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP


def test_equity_stop_terminates(setup):
    market = make_market(setup)
    env = make_env(market, setup, n=8, length=20, stop_equity=0.999)
    env.reset(seed=4)
    stopped = False
    for _ in range(20):
        _, _, terminated, truncated, info = env.step(torch.full((8, env.n_symbols), 0.9))
        assert torch.equal(terminated, info["equity"] <= 0.999)
        assert not (terminated & truncated).any()
        stopped |= bool(terminated.any())
    assert stopped


def test_seeds_fix_starts_latency_and_rewards(setup):
    sim = FULL.model_copy(update={"latency_bars": [0, 1, 3], "latency_probs": [0.5, 0.3, 0.2]})
    market = make_market(setup, simulation=sim)
    actions = torch.rand(12, 16, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1

    def run(seed):
        env = make_env(market, setup, n=16, length=5, simulation=sim)
        _, info = env.reset(seed=seed)
        rewards = torch.stack([env.step(a)[1] for a in actions])
        return info["row"], rewards

    rows_a, rew_a = run(11)
    rows_b, rew_b = run(11)
    rows_c, _ = run(12)
    assert torch.equal(rows_a, rows_b) and torch.equal(rew_a, rew_b)
    assert not torch.equal(rows_a, rows_c)
    env = make_env(market, setup, n=16, length=5, simulation=sim)
    assert torch.equal(env.reset(seed=3)[1]["row"], env.reset(seed=3)[1]["row"])


def test_splits_bound_the_episodes(setup):
    market = make_market(setup)
    val = market.splits["val"]
    env = make_env(market, setup, n=2, length=10, split="val")
    assert env.start_rows.min() >= val.rows.start
    assert env.start_rows.max() + 10 <= val.rows.stop
    with pytest.raises(ValueError, match=r"episode_length=500 does not fit in the train rows"):
        make_env(market, setup, length=500)
    with pytest.raises(ValueError, match=r"start_rows.*must lie in"):
        env.reset(options={"start_rows": [0, 0]})
