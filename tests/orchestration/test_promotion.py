"""Promotion: the rules decide, champion.json keeps the history, rollback steps back."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from market_nn_plus_ultra.config import Config, load_config
from market_nn_plus_ultra.orchestration import promotion as promotion_module
from market_nn_plus_ultra.orchestration.promotion import (
    CHAMPION_FILE,
    Champion,
    PromotionDecision,
    PromotionError,
    decide,
    promote,
    read_champion,
    rollback,
)

SYMBOLS = ("AAA", "BBB")


def _market(bars: int = 400, seed: int = 0, vol: float = 0.01) -> pd.DataFrame:
    """Rows (timestamp, symbol, realised_return) on business days."""
    rng = np.random.default_rng(seed)
    stamps = pd.bdate_range("2021-01-04", periods=bars, tz="UTC")
    keys = pd.MultiIndex.from_product([stamps, SYMBOLS], names=["timestamp", "symbol"])
    ret = rng.normal(0.0002, vol, len(keys))
    return pd.DataFrame({"realised_return": ret}, index=keys).reset_index()


def _signal(market: pd.DataFrame, hit: float, seed: int, size: float = 1.0) -> pd.DataFrame:
    """Positions ±size that point the right way in a ``hit`` share of rows (planted skill)."""
    rng = np.random.default_rng(seed)
    right = rng.random(len(market)) < hit
    sign = np.sign(market["realised_return"].to_numpy())
    return market.assign(position=size * np.where(right, sign, -sign))


def _noise(market: pd.DataFrame, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return market.assign(position=rng.uniform(-1, 1, len(market)))


def _cfg(**promotion) -> Config:
    sets = [f"orchestration.promotion.{k}={v}" for k, v in promotion.items()]
    return load_config(None, ["orchestration.promotion.bootstrap_samples=500", *sets])


def _rule(decision: PromotionDecision, name: str) -> dict:
    return next(r for r in decision.metrics["rules"] if r["name"] == name)


# --------------------------------------------------------------------------------------
# decide()
# --------------------------------------------------------------------------------------


def test_a_clearly_better_candidate_is_promoted():
    market = _market()
    decision = decide(_signal(market, 0.65, 1), _noise(market, 2), _cfg())
    assert decision.promote
    assert len(decision.reasons) == 4  # one line per rule
    assert decision.reasons[0].startswith("sharpe: passed")
    sharpe = decision.metrics["sharpe_difference"]
    assert sharpe["low"] > 0 and sharpe["estimate"] > sharpe["low"]
    assert decision.metrics["compared_with"] == "champion"
    assert decision.metrics["rows"]["bars"] == 400
    assert "calibration: skipped — the candidate has no prob_down" in decision.reasons[3]
    json.dumps(decision.to_dict(), allow_nan=False)  # JSON-ready as it is


def test_an_equal_or_worse_candidate_is_not_promoted_and_the_reason_names_the_rule():
    market = _market()
    champion = _signal(market, 0.65, 1)
    equal = decide(champion.copy(), champion, _cfg())
    assert not equal.promote
    assert _rule(equal, "sharpe")["passed"] is False
    assert equal.metrics["sharpe_difference"]["estimate"] == pytest.approx(0.0, abs=1e-12)
    assert "sharpe: failed" in equal.reasons[0]
    assert "orchestration.promotion.min_sharpe_diff_low" in equal.reasons[0]
    worse = decide(_noise(market, 2), champion, _cfg())
    assert not worse.promote and "sharpe: failed" in worse.reasons[0]


def test_the_drawdown_rule_bites():
    market = _market(bars=500, seed=3, vol=0.02)
    # the champion: a weaker signal at a tenth of the size (shallow drawdowns)
    champion = _signal(market, 0.58, 4, size=0.1)
    candidate = _signal(market, 0.68, 5)  # better Sharpe, full size: deeper drawdowns
    decision = decide(candidate, champion, _cfg(max_turnover_ratio="null"))
    assert _rule(decision, "sharpe")["passed"] is True
    drawdown = _rule(decision, "max_drawdown")
    assert drawdown["passed"] is False and drawdown["value"] > 0.02
    assert not decision.promote
    assert any(r.startswith("max_drawdown: failed") for r in decision.reasons)
    assert "max_drawdown_tolerance" in decision.reasons[1]
    loose = decide(candidate, champion, _cfg(max_drawdown_tolerance=1.0, max_turnover_ratio=20))
    assert loose.promote
    unchecked = decide(
        candidate, champion, _cfg(max_drawdown_tolerance="null", max_turnover_ratio="null")
    )
    assert unchecked.promote and _rule(unchecked, "max_drawdown")["passed"] is None


def test_the_turnover_rule_bites():
    market = _market(bars=400, seed=6)
    # the champion holds each sign for 20 bars (turnover ~0.1/bar); the candidate flips daily
    block = np.arange(len(market)) // (20 * len(SYMBOLS))
    sums = market.groupby([block, market["symbol"]])["realised_return"].transform("sum")
    rng = np.random.default_rng(7)
    flip = np.repeat(rng.random(block.max() + 1) < 0.3, 20 * len(SYMBOLS))[: len(market)]
    champion = market.assign(position=np.where(flip, -1.0, 1.0) * np.sign(sums))
    candidate = _signal(market, 0.75, 8)
    decision = decide(candidate, champion, _cfg())
    assert _rule(decision, "sharpe")["passed"] is True
    turnover = _rule(decision, "turnover")
    assert turnover["passed"] is False and turnover["value"] > 5
    assert not decision.promote
    assert "turnover: failed" in decision.reasons[2]
    assert "orchestration.promotion.max_turnover_ratio = 1.5" in decision.reasons[2]
    assert decide(candidate, champion, _cfg(max_turnover_ratio=50)).promote


def _with_probs(frame: pd.DataFrame, confident: float, right: float, seed: int) -> pd.DataFrame:
    """prob_down/flat/up: ``confident`` on one direction, the realised one in a ``right`` share."""
    rng = np.random.default_rng(seed)
    up = frame["realised_return"].to_numpy() > 0
    up = np.where(rng.random(len(up)) < right, up, ~up)
    rest = (1.0 - confident) / 2
    p_up = np.where(up, confident, rest)
    p_down = np.where(up, rest, confident)
    return frame.assign(prob_down=p_down, prob_flat=1.0 - p_up - p_down, prob_up=p_up)


def test_the_calibration_rule_bites_and_is_skipped_without_probabilities():
    market = _market(seed=9)
    champion = _with_probs(_noise(market, 10), 0.6, right=0.6, seed=1)  # calibrated
    good = _signal(market, 0.65, 11)
    # candidate's probabilities: 90% sure, right only about half the time → ECE ~0.4
    decision = decide(_with_probs(good, 0.9, right=0.5, seed=2), champion, _cfg())
    calibration = _rule(decision, "calibration")
    assert calibration["passed"] is False and calibration["value"] > 0.2
    assert not decision.promote and "calibration: failed" in decision.reasons[3]
    brier = decide(
        _with_probs(good, 0.9, right=0.5, seed=2), champion, _cfg(calibration_metric="brier")
    )
    assert _rule(brier, "calibration")["passed"] is False
    assert "candidate brier" in brier.reasons[3]
    # no probabilities on the candidate: the rule is skipped, in words
    skipped = decide(good, champion, _cfg())
    assert skipped.promote and _rule(skipped, "calibration")["passed"] is None
    assert skipped.reasons[3] == (
        "calibration: skipped — the candidate has no prob_down/prob_flat/prob_up probabilities"
    )


def test_ece_and_brier_match_a_direct_computation():
    market = _market(bars=200, seed=12)
    frame = _with_probs(_signal(market, 0.6, 13), 0.7, right=0.6, seed=3)
    card = decide(frame, frame.copy(), _cfg()).metrics["candidate"]
    probs = frame[["prob_down", "prob_flat", "prob_up"]].to_numpy()
    r = frame["realised_return"].to_numpy()
    flat_band = Config().model.flat_band
    labels = np.where(r > flat_band, 2, np.where(r < -flat_band, 0, 1))
    brier = np.mean(((probs - np.eye(3)[labels]) ** 2).sum(axis=1))
    conf, hit = probs.max(axis=1), (probs.argmax(axis=1) == labels)
    bins = np.clip(np.ceil(conf * 10).astype(int) - 1, 0, 9)
    ece = sum(
        abs(hit[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
        for b in range(10)
        if (bins == b).any()
    )
    assert card["brier"] == pytest.approx(brier, rel=1e-12)
    assert card["ece"] == pytest.approx(ece, rel=1e-9)


def test_scorecard_and_interval_match_empyrical_and_arch():
    empyrical = pytest.importorskip("empyrical")
    from arch.bootstrap import StationaryBootstrap

    market = _market(bars=300, seed=14)
    cand, champ = _signal(market, 0.6, 15), _noise(market, 16)
    cfg = _cfg(block_length=5.0, bootstrap_samples=1000, seed=3)
    decision = decide(cand, champ, cfg)
    cost = cfg.evaluation.cost_bps / 1e4

    def net(frame: pd.DataFrame) -> np.ndarray:  # the backtest convention, by hand
        wide_pos = frame.pivot(index="timestamp", columns="symbol", values="position")
        wide_ret = frame.pivot(index="timestamp", columns="symbol", values="realised_return")
        trade = wide_pos.diff().fillna(wide_pos).abs()
        return (wide_pos * wide_ret - cost * trade).mean(axis=1).to_numpy()

    a, b = net(cand), net(champ)
    card, ref = decision.metrics["candidate"], decision.metrics["champion"]
    assert card["sharpe"] == pytest.approx(empyrical.sharpe_ratio(a), rel=1e-9)
    assert ref["sharpe"] == pytest.approx(empyrical.sharpe_ratio(b), rel=1e-9)
    assert card["max_drawdown"] == pytest.approx(empyrical.max_drawdown(a), rel=1e-9)
    assert ref["max_drawdown"] == pytest.approx(empyrical.max_drawdown(b), rel=1e-9)
    diff = decision.metrics["sharpe_difference"]
    assert diff["estimate"] == pytest.approx(
        empyrical.sharpe_ratio(a) - empyrical.sharpe_ratio(b), rel=1e-9
    )

    def sharpe_gap(x: np.ndarray, y: np.ndarray) -> float:
        return np.sqrt(252) * (x.mean() / x.std(ddof=1) - y.mean() / y.std(ddof=1))

    bs = StationaryBootstrap(5.0, a, b, seed=np.random.default_rng(3))
    low, high = bs.conf_int(sharpe_gap, reps=1000, method="percentile", size=0.9)[:, 0]
    # arch's own percentile interval of the same statistic, same block length and seed
    assert (diff["low"], diff["high"]) == pytest.approx((low, high), rel=1e-9)
    assert diff["level"] == 0.9 and diff["reps"] == 1000 and diff["block_length"] == 5.0


def test_without_a_champion_the_candidate_must_beat_buy_and_hold():
    market = _market(seed=17)
    good = decide(_signal(market, 0.65, 18), None, _cfg())
    assert good.promote and good.metrics["compared_with"] == "buy_and_hold"
    assert good.metrics["champion"] is None
    assert good.metrics["reference"]["turnover"] == pytest.approx(1 / 400)  # enters once
    assert "vs buy_and_hold" in good.reasons[0]
    assert good.reasons[2].startswith("turnover: skipped — buy-and-hold trades only once")
    bad = decide(_noise(market, 19), None, _cfg())
    assert not bad.promote and bad.reasons[0].startswith("sharpe: failed")


def test_first_baseline_flat_and_none():
    market = _market(seed=20)
    flat = decide(_signal(market, 0.65, 21), None, _cfg(first_baseline="flat"))
    assert flat.promote and "0 (cash)" in flat.reasons[0]
    assert flat.metrics["reference"] is None
    assert not decide(_noise(market, 22), None, _cfg(first_baseline="flat")).promote
    none = decide(_noise(market, 22), None, _cfg(first_baseline="none"))
    assert none.promote and "first_baseline is none" in none.reasons[0]


def test_only_shared_out_of_sample_rows_are_scored():
    market = _market(bars=300, seed=23)
    cand, champ = _signal(market, 0.65, 24), _noise(market, 25)
    stamps = np.sort(market["timestamp"].unique())
    cand["sample"] = np.where(cand["timestamp"] < stamps[100], "train", "test")
    champ = champ[champ["timestamp"] < stamps[280]]  # the champion lacks the last 20 bars
    decision = decide(cand, champ, _cfg())
    rows = decision.metrics["rows"]
    assert rows["bars"] == 180 and rows["rows"] == 360
    assert rows["start"] == stamps[100] and rows["end"] == stamps[279]
    assert rows["candidate_rows"] == 400 and rows["champion_rows"] == 560


def test_too_few_bars_is_not_promoted():
    market = _market(bars=20, seed=26)
    decision = decide(_signal(market, 0.9, 27), _noise(market, 28), _cfg())
    assert not decision.promote
    assert decision.reasons == (
        "bars: failed — only 20 scored bars shared by the candidate and the champion, fewer "
        "than orchestration.promotion.min_periods = 30 — lengthen the out-of-sample window",
    )


def test_frames_that_cannot_be_compared_are_clear_errors():
    market = _market(bars=100, seed=29)
    cand = _signal(market, 0.6, 30)
    other = cand.assign(realised_return=cand["realised_return"] * 1.5)
    with pytest.raises(PromotionError, match="disagree on realised_return at 200 of 200"):
        decide(cand, other, _cfg())
    later = _market(bars=100, seed=29).assign(
        timestamp=lambda f: f["timestamp"] + pd.Timedelta(days=1000), position=0.5
    )
    with pytest.raises(PromotionError, match="share no out-of-sample"):
        decide(cand, later, _cfg())
    with pytest.raises(PromotionError, match=r"missing column\(s\) \['position'\]"):
        decide(market, None, _cfg())
    with pytest.raises(PromotionError, match="duplicated"):
        decide(pd.concat([cand, cand.head(1)]), None, _cfg())
    with pytest.raises(PromotionError, match="all 200 rows are in-sample"):
        decide(cand.assign(sample="train"), None, _cfg())


# --------------------------------------------------------------------------------------
# champion.json
# --------------------------------------------------------------------------------------


def _run(root, name):
    run = root / "automation_runs" / name
    (run / "train").mkdir(parents=True)
    (run / "train" / "model.ckpt").write_bytes(b"ckpt")
    return run


YES = PromotionDecision(True, ("sharpe: passed — planted",), {"candidate": {"sharpe": 1.0}})
NO = PromotionDecision(False, ("sharpe: failed — planted",), {})


def test_promote_writes_champion_json_with_history(tmp_path):
    root = tmp_path / "retrain"
    first, second = _run(root, "20240701T000000Z"), _run(root, "20240801T000000Z")
    assert read_champion(root) is None
    path = promote(root, first, first / "train", YES)
    assert path == root / CHAMPION_FILE
    champ = read_champion(root)
    assert isinstance(champ, Champion)
    assert champ.run_dir == first.absolute() and champ.checkpoint == (first / "train").absolute()
    assert set(champ.to_dict()) == {"run_dir", "checkpoint", "promoted_at"}
    promote(root, second, second / "train", YES)
    raw = json.loads(path.read_text())
    assert raw["format"] == 1
    assert raw["champion"]["run_dir"] == "automation_runs/20240801T000000Z"  # relative
    assert raw["champion"]["decision"]["reasons"] == ["sharpe: passed — planted"]
    assert [h["run_dir"] for h in raw["history"]] == ["automation_runs/20240701T000000Z"]
    promote(root, second, second / "train", YES)  # promoting the champion again: no change
    assert json.loads(path.read_text())["history"] == raw["history"]
    assert [p.name for p in root.iterdir() if p.name.endswith(".tmp")] == []


def test_the_folder_can_move(tmp_path):
    root = tmp_path / "retrain"
    run = _run(root, "r1")
    promote(root, run, run / "train" / "model.ckpt", YES)
    moved = tmp_path / "elsewhere"
    os.replace(root, moved)
    assert read_champion(moved).checkpoint == (moved / "automation_runs/r1/train/model.ckpt")


def test_writing_is_atomic(tmp_path, monkeypatch):
    root = tmp_path / "retrain"
    first, second = _run(root, "r1"), _run(root, "r2")
    promote(root, first, first / "train", YES)
    before = (root / CHAMPION_FILE).read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)  # the rename that publishes the new file
    with pytest.raises(OSError, match="disk full"):
        promote(root, second, second / "train", YES)
    monkeypatch.undo()
    assert (root / CHAMPION_FILE).read_bytes() == before
    assert [p.name for p in root.iterdir() if ".tmp" in p.name] == []


def test_rollback_restores_the_previous_champion(tmp_path):
    root = tmp_path / "retrain"
    first, second = _run(root, "r1"), _run(root, "r2")
    promote(root, first, first / "train", YES)
    promote(root, second, second / "train", YES)
    restored = rollback(root)
    assert restored.run_dir == first.absolute()
    assert read_champion(root) == restored
    raw = json.loads((root / CHAMPION_FILE).read_text())
    assert raw["history"] == []
    assert raw["rolled_back"][0]["run_dir"] == "automation_runs/r2"
    assert "rolled_back_at" in raw["rolled_back"][0]
    with pytest.raises(PromotionError, match="no previous champion to go back to"):
        rollback(root)


def test_rollback_without_a_file_or_with_a_missing_previous_run(tmp_path):
    with pytest.raises(PromotionError, match="nothing has been promoted"):
        rollback(tmp_path)
    first, second = _run(tmp_path, "r1"), _run(tmp_path, "r2")
    promote(tmp_path, first, first / "train", YES)
    promote(tmp_path, second, second / "train", YES)
    (first / "train" / "model.ckpt").unlink()
    (first / "train").rmdir()
    with pytest.raises(PromotionError, match=r"previous champion's checkpoint .*r1/train"):
        rollback(tmp_path)
    assert read_champion(tmp_path).run_dir == second.absolute()  # unchanged


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "not readable JSON"),
        ("[1, 2]", "the top level is list"),
        ('{"champion": {"run_dir": "a", "promoted_at": "t"}}', "champion.checkpoint is missing"),
        (
            '{"champion": {"run_dir": "a", "checkpoint": "b", "promoted_at": "t"}, "history": 3}',
            "history is not a list",
        ),
    ],
)
def test_a_corrupt_champion_json_names_the_file_and_the_fix(tmp_path, content, problem):
    (tmp_path / CHAMPION_FILE).write_text(content)
    for call in (
        lambda: read_champion(tmp_path),
        lambda: rollback(tmp_path),
        lambda: promote(tmp_path, tmp_path, tmp_path, YES),
    ):
        with pytest.raises(PromotionError) as err:
            call()
        text = str(err.value)
        assert str(tmp_path / CHAMPION_FILE) in text and problem in text
        assert "restore it from a backup or fix it by hand" in text
    assert (tmp_path / CHAMPION_FILE).read_text() == content  # never overwritten


def test_promote_refuses_a_negative_decision_unless_forced(tmp_path):
    run = _run(tmp_path, "r1")
    with pytest.raises(PromotionError, match=r"says not to promote .*sharpe: failed .*force=True"):
        promote(tmp_path, run, run / "train", NO)
    promote(tmp_path, run, run / "train", NO, force=True)
    raw = json.loads((tmp_path / CHAMPION_FILE).read_text())
    assert raw["champion"]["forced"] is True
    with pytest.raises(PromotionError, match=r"checkpoint .* does not exist"):
        promote(tmp_path, run, run / "missing.ckpt", YES)
    with pytest.raises(PromotionError, match=r"run folder .* does not exist"):
        promote(tmp_path, tmp_path / "nope", run / "train", YES)


def test_module_exports_the_contract():
    for name in ("decide", "promote", "read_champion", "rollback", "PromotionError"):
        assert name in promotion_module.__all__
    assert issubclass(PromotionError, ValueError)
