"""Analyst feedback → offline-RL data → replay: veto maths, export, loading, fine-tuning."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from market_nn_plus_ultra.config import ModelConfig
from market_nn_plus_ultra.config.ppo import OffPolicyConfig
from market_nn_plus_ultra.data.annotations import add_annotation
from market_nn_plus_ultra.data.store import read_table
from market_nn_plus_ultra.inference.policy_agent import PolicyAgent
from market_nn_plus_ultra.rl import VectorTradingEnv
from market_nn_plus_ultra.rl.buffer import ReplayBuffer, Transitions, awr_update
from market_nn_plus_ultra.rl.feedback import (
    FEEDBACK_COLUMNS,
    FeedbackError,
    export_feedback,
    load_feedback,
    read_feedback,
)
from market_nn_plus_ultra.rl.finetune import finetune
from market_nn_plus_ultra.rl.policy import ActorCritic
from market_nn_plus_ultra.rl.veto import FLAT_BAND, symbol_log_prob, veto_unlikelihood
from market_nn_plus_ultra.service.log import PredictionLog
from tests.rl._finetune_cases import rl_config, supervised_run

pytestmark = pytest.mark.usefixtures("one_thread")

S, W, F = 2, 4, 2
CFG = ModelConfig(architecture="state_space", d_model=8, depth=1, n_heads=2, ff_mult=2,
                  dropout=0.0, max_seq_len=8, ssm_state_dim=4)  # fmt: skip


def _obs(b: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    portfolio = torch.zeros(b, S, 3)
    portfolio[..., 1] = 1.0
    return {"window": torch.randn(b, S, W, F, generator=g), "portfolio": portfolio}


# --------------------------------------------------------------------------------------
# The veto maths
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["continuous", "discrete"])
def test_symbol_log_probs_sum_to_the_policys_joint_log_prob(mode):
    torch.manual_seed(0)
    policy = ActorCritic.from_config(CFG, F, mode)
    out = policy(_obs(5))
    raw = torch.randn(5, S) if mode == "continuous" else torch.randint(0, 3, (5, S))
    joint, _ = policy.log_prob_entropy(out, raw)
    torch.testing.assert_close(symbol_log_prob(out, raw).sum(-1), joint)


def test_the_unlikelihood_matches_minus_log_one_minus_p():
    torch.manual_seed(0)
    cont = ActorCritic.from_config(CFG, F, "continuous")
    out = cont(_obs(3))
    mean, std = out.mean.detach().double(), math.exp(float(out.log_std.detach()))
    raw = torch.tensor([[1.0, -0.7], [0.0, 2.0], [-1.5, 0.01]])
    veto = torch.tensor([[True, True], [True, False], [False, True]])
    phi = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    band = math.atanh(FLAT_BAND)
    expected = 0.0
    for b, s in zip(*torch.nonzero(veto, as_tuple=True), strict=True):
        m, r = float(mean[b, s]), float(raw[b, s])
        if abs(r) < band:  # a vetoed flat position: the probability of |a| < FLAT_BAND
            p = phi((band - m) / std) - phi((-band - m) / std)
        else:  # a vetoed long/short: the probability of that side
            p = phi(math.copysign(1, r) * m / std)
        expected += -math.log(1 - p)
    assert float(veto_unlikelihood(out, raw, veto)) == pytest.approx(expected / 3, rel=1e-5)
    disc = ActorCritic.from_config(CFG, F, "discrete")
    out = disc(_obs(3))
    classes = torch.tensor([[2, 0], [1, 1], [0, 2]])
    p = out.logits.softmax(-1).gather(-1, classes[..., None]).squeeze(-1).double()
    reference = (-torch.log1p(-p) * veto).sum(-1).mean()
    assert float(veto_unlikelihood(out, classes, veto)) == pytest.approx(float(reference), rel=1e-5)


def _one_state_ring(mode: str, vetoed: bool) -> tuple[ActorCritic, ReplayBuffer, dict]:
    """One state whose only replayed action is a long with a good return."""
    torch.manual_seed(0)
    policy = ActorCritic.from_config(CFG, F, mode)
    obs = _obs(1)
    b = 64
    same = {k: v.expand(b, *v.shape[1:]).clone() for k, v in obs.items()}
    action = torch.full((b, S), 1.0) if mode == "continuous" else torch.full((b, S), 2)
    returns = torch.linspace(0.5, 1.5, b)
    veto = torch.zeros(b, S, dtype=torch.bool)
    veto[:, 0] = vetoed  # symbol 0's long is vetoed in that state
    ring = ReplayBuffer(b)
    ring.add(Transitions(same, action, returns, veto=veto))
    return policy, ring, obs


def _long(policy: ActorCritic, obs: dict, mode: str) -> torch.Tensor:
    with torch.no_grad():
        out = policy(obs)
    return out.mean[0] if mode == "continuous" else out.logits[0].argmax(-1) - 1  # (S,)


@pytest.mark.parametrize("mode", ["continuous", "discrete"])
@pytest.mark.parametrize("veto", ["exclude", "penalise"])
def test_a_vetoed_action_is_left_out_or_pushed_away(mode, veto):
    results = {}
    for vetoed in (False, True):
        policy, ring, obs = _one_state_ring(mode, vetoed)
        actor = [p for n, p in policy.named_parameters() if not n.startswith("critic.")]
        cfg = OffPolicyConfig(enabled=True, batch_size=32, updates_per_rollout=40, min_buffer=1,
                              learning_rate=1e-2, veto=veto, veto_penalty=1.0)  # fmt: skip
        before = _long(policy, obs, mode)
        stats = awr_update(policy, ring, torch.optim.Adam(actor, lr=cfg.learning_rate), cfg,
                           generator=torch.Generator().manual_seed(0))  # fmt: skip
        results[vetoed] = (before, _long(policy, obs, mode), stats)
    before, plain, _ = results[False]
    assert (plain > 0).all() and (plain >= before).all()  # imitation: long on both symbols
    _, vetoed_after, stats = results[True]
    assert vetoed_after[1] > 0  # symbol 1's long is still imitated
    if veto == "exclude":
        assert math.isnan(stats.veto_loss)
        if mode == "continuous":  # symbol 0 is not imitated: it stays near where it started
            assert abs(float(vetoed_after[0] - before[0])) < abs(float(plain[0] - before[0]))
    else:
        assert vetoed_after[0] < 0 and np.isfinite(stats.veto_loss)  # pushed to the short side


# --------------------------------------------------------------------------------------
# Export and loading
# --------------------------------------------------------------------------------------

FIRST, N_BARS, POSITION = 80, 30, 0.8


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A supervised run, its database and a prediction log of N_BARS bars x 2 symbols."""
    tmp = tmp_path_factory.mktemp("feedback")
    result, db = supervised_run(tmp)
    stamps = sorted(read_table(db, "series")["timestamp"].unique())[FIRST : FIRST + N_BARS]
    log = PredictionLog(tmp / "service.db")
    rows = []
    for i, ts in enumerate(stamps):
        iso = pd.Timestamp(ts).isoformat()
        for sym in ("AAA", "BBB"):
            rows.append((f"r{i}", "1-abc", iso, sym, iso, POSITION, POSITION, 0.0, "{}", "none",
                         "[]", iso))  # fmt: skip
    rows.append(("rej", "1-abc", iso, "AAA", iso, 0.0, 0.9, 0.0, "{}", "reject", "[]", iso))
    log.append(rows)
    log.flush()
    log.close()
    return tmp, result.checkpoint_dir, db, tmp / "service.db", stamps


def test_export_prices_rewards_and_attaches_annotations(served, tmp_path):
    _, _, db, service_db, stamps = served
    import sqlite3

    con = sqlite3.connect(service_db)
    con.execute("INSERT OR REPLACE INTO outcomes VALUES ('r3', 'BBB', ?, '1-abc', 0.05, ?)",
                (pd.Timestamp(stamps[3]).isoformat(), "now"))  # fmt: skip
    con.commit()
    con.close()
    notes = tmp_path / "notes.db"
    add_annotation(notes, kind="veto", rationale="no", request_id="r5", symbol="AAA",
                   predictions_db=service_db)  # fmt: skip
    add_annotation(notes, kind="anomaly", text="odd", request_id="r6", symbol="BBB",
                   predictions_db=service_db)  # fmt: skip
    result = export_feedback(tmp_path / "f.parquet", service_db=service_db, annotations_db=notes,
                             market_db=db, cost_bps=10.0)  # fmt: skip
    assert (result.rows, result.vetoes, result.anomalies, result.rejected) == (60, 1, 1, 1)
    assert result.reward_sources == {"market": 59, "outcome": 1}
    frame, meta = read_feedback(result.path)
    assert list(frame.columns) == list(FEEDBACK_COLUMNS) and meta["cost_bps"] == 10.0
    assert meta["market_db_sha256"] and meta["market_db"].endswith("market.db")
    # the reward from the closes, computed independently
    closes = read_table(db, "series").pivot(index="timestamp", columns="symbol", values="close")
    nxt = (closes.shift(-1) / closes - 1).stack()
    for _, row in frame.iterrows():
        key = (pd.Timestamp(row["timestamp"]), row["symbol"])
        first = row["timestamp"] == pd.Timestamp(stamps[0]).strftime("%Y-%m-%dT%H:%M:%SZ")
        cost = 10.0 / 1e4 * POSITION if first else 0.0  # entering from flat, then held
        realised = 0.05 if (row["request_id"], row["symbol"]) == ("r3", "BBB") else nxt[key]
        assert row["realised_return"] == pytest.approx(realised)
        assert row["reward"] == pytest.approx(POSITION * realised - cost)
    marked = frame[frame["veto"] | frame["anomaly"]]
    assert marked[["request_id", "symbol", "veto", "anomaly"]].values.tolist() == [
        ["r5", "AAA", True, False], ["r6", "BBB", False, True],
    ]  # fmt: skip
    assert marked["rationale"].iloc[0] == "no" and pd.isna(marked["rationale"].iloc[1])
    assert [len(ids) for ids in marked["annotation_ids"]] == [1, 1]
    with pytest.raises(FeedbackError, match="logs no prediction"):
        export_feedback(tmp_path / "g.parquet", service_db=service_db, model_version="9-zzz")


def test_loaded_feedback_sees_what_the_env_sees(served, tmp_path):
    tmp, _, db, service_db, stamps = served
    add_annotation(tmp_path / "n.db", kind="veto", rationale="x", request_id="r4", symbol="BBB",
                   predictions_db=service_db)  # fmt: skip
    path = export_feedback(tmp_path / "f.parquet", service_db=service_db,
                           annotations_db=tmp_path / "n.db", market_db=db).path  # fmt: skip
    cfg = rl_config(db, tmp, "reinforcement.env.split=all")
    env = VectorTradingEnv.from_config(cfg, N_BARS)
    seeded = load_feedback(path, env.market, cfg.windows, gamma=0.5)
    t = seeded.transitions
    assert (len(t), seeded.used, seeded.vetoed) == (N_BARS, 2 * N_BARS, 1)
    rows = env.market.tensors.timestamps.get_indexer(pd.to_datetime(stamps, utc=True))
    obs, _ = env.reset(options={"start_rows": rows})
    torch.testing.assert_close(t.obs["window"], obs["window"])  # same features, normaliser
    assert t.known.all() and t.veto.nonzero().tolist() == [[4, 1]]
    torch.testing.assert_close(t.actions, torch.full((N_BARS, 2), math.atanh(POSITION)))
    assert t.obs["portfolio"][0, :, 0].tolist() == [0.0, 0.0]  # flat before the first bar
    assert t.obs["portfolio"][1:, :, 0].allclose(torch.tensor(POSITION))
    frame, _ = read_feedback(path)
    reward = frame.groupby("timestamp")["reward"].mean().to_numpy()
    expected = [sum(0.5**k * r for k, r in enumerate(reward[i:])) for i in range(N_BARS)]
    np.testing.assert_allclose(t.returns.numpy(), expected, rtol=1e-5)


def test_the_annotation_export_replay_path_changes_the_vetoed_action(served, tmp_path):
    """End to end: a veto on one (bar, symbol) makes the fine-tuned policy take the other
    side there; the same fine-tune without the veto keeps the served long."""
    tmp, run_dir, db, service_db, _ = served
    plain = export_feedback(tmp_path / "plain.parquet", service_db=service_db,
                            annotations_db=tmp_path / "none.db", market_db=db).path  # fmt: skip
    veto_db = tmp_path / "veto.db"
    add_annotation(veto_db, kind="veto", rationale="earnings", request_id="r12", symbol="AAA",
                   predictions_db=service_db)  # fmt: skip
    vetoed = export_feedback(tmp_path / "veto.parquet", service_db=service_db,
                             annotations_db=veto_db, market_db=db).path  # fmt: skip
    means = {}
    for name, data in (("plain", plain), ("veto", vetoed)):
        off = "reinforcement.ppo.off_policy"
        cfg = rl_config(db, tmp, f"{off}.enabled=true", f"{off}.dataset={data}",
                        f"{off}.min_buffer=1", f"{off}.batch_size=64",
                        f"{off}.updates_per_rollout=40", f"{off}.learning_rate=0.01",
                        f"{off}.veto_penalty=50", "reinforcement.updates=2")  # fmt: skip
        result = finetune(cfg, run_dir, output_dir=tmp_path / f"rl_{name}")
        assert np.isfinite(result.final.awr_loss)
        agent = PolicyAgent.from_run(result.run_dir)
        seeded = load_feedback(data, agent_market(cfg), cfg.windows)
        with torch.no_grad():
            means[name] = agent.policy(seeded.transitions.obs).mean  # (bars, 2)
    assert means["plain"][12, 0] > 0.3  # the served long, imitated
    assert means["veto"][12, 0] < 0  # vetoed: the policy goes the other way in that state
    assert means["veto"][12, 1] > 0  # the unvetoed symbol keeps its long
    assert (means["veto"][[10, 11, 13, 14], 0] > 0).all()  # and so do the neighbouring bars


def agent_market(cfg):
    from market_nn_plus_ultra.rl.market import EnvMarket

    return EnvMarket.from_config(cfg)
