"""finetune(): the run folder, rollouts.parquet, TensorBoard, exact resume, curriculum
stages, the warm starts and every refusal, on a tiny supervised run (about 15 s in all)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pandas as pd
import pytest
import torch

from market_nn_plus_ultra.config import load_config
from market_nn_plus_ultra.models import build_model
from market_nn_plus_ultra.rl import WarmStartError, read_supervised
from market_nn_plus_ultra.rl.finetune import FinetuneError, FinetuneUpdate, finetune
from market_nn_plus_ultra.rl.ppo import UpdateStats
from market_nn_plus_ultra.training.warm_start import save_backbone
from tests.rl._finetune_cases import differing, rl_config, supervised_run

pytestmark = pytest.mark.usefixtures("one_thread")

# a two-stage curriculum: 1 update of short, cost-free episodes on 4-bar windows, then the base
PROFILE = (
    'reinforcement.curriculum.profiles.tiny={"advance": "updates", "stages": ['
    '{"name": "calm", "updates": 1, "episode_length": 8, "cost_multiplier": 0.0, "window": 4},'
    '{"name": "real"}]}'
)
# every friction the env state must carry over a resume: latency books, shaping moments
FRICTIONS = [
    "simulation.cost_bps=5",
    "simulation.latency_bars=[0,2]",
    "simulation.latency_probs=[0.5,0.5]",
    "reinforcement.reward.differential_sharpe.enabled=true",
]


@pytest.fixture(scope="module")
def supervised(tmp_path_factory):
    return supervised_run(tmp_path_factory.mktemp("finetune"))


@pytest.fixture(scope="module")
def run(supervised, tmp_path_factory):
    """Three updates under the two-stage curriculum."""
    result, db = supervised
    tmp = tmp_path_factory.mktemp("rl")
    cfg = rl_config(db, tmp, PROFILE, "reinforcement.curriculum.profile=tiny")
    seen: list[FinetuneUpdate] = []
    return finetune(cfg, result.checkpoint_dir, output_dir=tmp / "rl", on_update=seen.append), seen


def _events(folder: Path) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` of the TensorBoard event files in ``folder`` (TFRecords)."""
    from tensorboardX.proto import event_pb2

    found: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i : i + 8])
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12 : i + 12 + length])
            i += 12 + length + 4  # length, its CRC, the record, its CRC
            for value in event.summary.value:
                found.setdefault(value.tag, {})[event.step] = value.simple_value
    return found


def test_the_run_folder_holds_every_file(run, supervised):
    result, seen = run
    folder = result.run_dir
    names = {p.name for p in folder.iterdir()}
    assert {"config.yaml", "model_info.json", "policy.pt", "state.pt", "rollouts.parquet"} <= names
    assert not list(folder.glob(".*.tmp"))  # every write was atomic
    assert [u.stats.update for u in seen] == [1, 2, 3] and list(result.history) == seen
    assert result.resumed_from == 0 and result.final == seen[-1].stats
    # the resolved config: the checkpoint's model section, this folder as output_dir
    cfg = load_config(result.config_path)
    model, n_features, _, file = read_supervised(supervised[0].checkpoint_dir)
    assert cfg.model == model and cfg.reinforcement.output_dir == folder
    info = json.loads((folder / "model_info.json").read_text())
    sup_info = json.loads(supervised[0].model_info_path.read_text())
    assert info["kind"] == "rl_policy" and info["source_checkpoint"] == str(file)
    assert info["splits"] == sup_info["splits"]
    assert info["feature_columns"] == sup_info["feature_columns"]
    policy = torch.load(result.policy_path, weights_only=True)
    assert policy["format"] == "plus_ultra_policy" and policy["version"] == 1
    assert policy["updates"] == 3 and policy["n_features"] == n_features
    assert policy["action_mode"] == "continuous" and policy["curriculum_stage"] == "real"
    assert set(policy["head"]) and all(k.startswith("head.") for k in policy["head"])
    assert policy["normaliser"]["symbols"] == ["AAA", "BBB"]
    assert policy["stage_settings"]["window"] == 8  # the base stage restored windows.window


def test_rollouts_parquet_has_one_row_per_update(run):
    result, _ = run
    frame = pd.read_parquet(result.rollouts_path)
    columns = [*UpdateStats.__dataclass_fields__, "curriculum_stage"]
    assert list(frame.columns) == columns and len(frame) == 3
    assert frame["update"].tolist() == [1, 2, 3]
    assert frame["curriculum_stage"].tolist() == ["calm", "real", "real"]
    for row, update in zip(frame.to_dict(orient="records"), result.history, strict=True):
        assert differing(row, update.as_row()) == []
    # 4 envs x 12 steps a rollout
    assert frame["env_steps"].tolist() == [48, 96, 144]


def test_tensorboard_events_hold_every_update(run):
    result, _ = run
    assert result.tensorboard_dir == result.run_dir / "tensorboard"
    events = _events(result.tensorboard_dir)
    for name in ("mean_reward", "policy_loss", "value_loss", "entropy", "approx_kl"):
        logged = events[f"rl/{name}"]
        expected = [getattr(u.stats, name) for u in result.history]
        assert sorted(logged) == [1, 2, 3]
        assert [logged[k] for k in (1, 2, 3)] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert events["rl/curriculum_stage"] == {1: 0.0, 2: 1.0, 3: 1.0}


def test_the_curriculum_stage_shapes_the_episodes(run):
    result, _ = run
    first, later = result.history[0].stats, result.history[1].stats
    # the calm stage's 8-bar episodes end inside its 12-step rollout; the real stage's 16 do not
    assert first.episode_return == first.episode_return  # finite: episodes ended
    assert later.episode_return != later.episode_return  # NaN: none ended in update 2


def test_resume_makes_the_uninterrupted_run(supervised, tmp_path):
    result, db = supervised
    cfg = rl_config(db, tmp_path, PROFILE, "reinforcement.curriculum.profile=tiny", *FRICTIONS)
    whole = finetune(cfg, result.checkpoint_dir, output_dir=tmp_path / "whole")

    class Interrupted(Exception):
        pass

    def crash(update: FinetuneUpdate) -> None:
        if update.stats.update == 1:  # after update 1's files: a crash in stage "calm"
            raise Interrupted

    with pytest.raises(Interrupted):
        finetune(cfg, result.checkpoint_dir, output_dir=tmp_path / "cut", on_update=crash)
    assert len(pd.read_parquet(tmp_path / "cut" / "rollouts.parquet")) == 1
    resumed = finetune(cfg, result.checkpoint_dir, output_dir=tmp_path / "cut", resume=True)
    assert resumed.resumed_from == 1 and len(resumed.history) == 3
    for a, b in zip(whole.history, resumed.history, strict=True):
        assert differing(a.as_row(), b.as_row()) == [], a.stats.update
    weights = torch.load(whole.policy_path, weights_only=True)["policy"]
    again = torch.load(resumed.policy_path, weights_only=True)["policy"]
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    frame = pd.read_parquet(resumed.rollouts_path)
    assert frame["update"].tolist() == [1, 2, 3]
    assert sorted(_events(resumed.tensorboard_dir)["rl/mean_reward"]) == [1, 2, 3]
    # extending a finished run: only reinforcement.updates may change
    longer = cfg.model_copy(deep=True)
    longer.reinforcement.updates = 4
    extended = finetune(longer, result.checkpoint_dir, output_dir=tmp_path / "cut", resume=True)
    assert [u.stats.update for u in extended.history] == [1, 2, 3, 4]


def test_a_pretraining_backbone_replaces_the_supervised_one(supervised, tmp_path):
    result, db = supervised
    model, n_features, _, _ = read_supervised(result.checkpoint_dir)
    info = json.loads(result.model_info_path.read_text())
    torch.manual_seed(11)
    backbone = build_model(model, n_features).backbone
    path = save_backbone(tmp_path / "backbone.pt", backbone, model, info["feature_columns"])
    cfg = rl_config(db, tmp_path, "reinforcement.updates=1")
    run = finetune(
        cfg, result.checkpoint_dir, warm_start_checkpoint=path, output_dir=tmp_path / "b"
    )
    (summary,) = run.warm_starts
    assert summary.source == "backbone" and summary.backbone_tensors == len(backbone.state_dict())
    policy = torch.load(run.policy_path, weights_only=True)
    assert policy["head"] is None and policy["warm_start_checkpoint"] == str(path)
    with pytest.raises(FinetuneError, match="started from --warm-start-checkpoint"):
        finetune(cfg, result.checkpoint_dir, output_dir=tmp_path / "b", resume=True)
    more = cfg.model_copy(deep=True)
    more.reinforcement.updates = 2
    again = finetune(
        more, result.checkpoint_dir, warm_start_checkpoint=path, output_dir=tmp_path / "b",
        resume=True,
    )  # fmt: skip
    assert again.warm_starts == () and len(again.history) == 2  # the weights came from state.pt
    assert torch.load(again.policy_path, weights_only=True)["head"] is None


def test_refusals_name_the_problem_and_the_fix(supervised, run, tmp_path):
    result, db = supervised
    cfg = rl_config(db, tmp_path)
    with pytest.raises(WarmStartError, match="does not exist"):
        finetune(cfg, tmp_path / "nowhere.ckpt", output_dir=tmp_path / "a")
    with pytest.raises(WarmStartError, match=r"no best\.ckpt or last\.ckpt"):
        finetune(cfg, tmp_path, output_dir=tmp_path / "a")
    with pytest.raises(FinetuneError, match=r"already holds a run \(config\.yaml.*--resume"):
        finetune(cfg, result.checkpoint_dir, output_dir=run[0].run_dir)
    with pytest.raises(FinetuneError, match=r"already holds a run.*best\.ckpt"):
        finetune(cfg, result.checkpoint_dir, output_dir=result.checkpoint_dir)
    with pytest.raises(FinetuneError, match=r"--resume: .* holds no state\.pt"):
        finetune(cfg, result.checkpoint_dir, output_dir=tmp_path / "empty", resume=True)
    wider = load_config(run[0].config_path, ["reinforcement.env.num_envs=2"])
    with pytest.raises(FinetuneError, match=r"differs from the run's .* in reinforcement.env.n"):
        finetune(wider, result.checkpoint_dir, output_dir=run[0].run_dir, resume=True)
    fewer = rl_config(db, tmp_path, "features.names=[log_return_1,rsi_14]")
    with pytest.raises(FinetuneError, match=r"features differ .* missing in the config: \["):
        finetune(fewer, result.checkpoint_dir, output_dir=tmp_path / "b")
    other = rl_config(db, tmp_path, "windows.normalise=window_zscore")
    with pytest.raises(FinetuneError, match=r"set windows\.normalise=train_zscore"):
        finetune(other, result.checkpoint_dir, output_dir=tmp_path / "c")
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


@pytest.mark.slow  # about 15 s on 2 shared cores, most of it starting Ray and its actor
def test_ray_rollout_workers_fill_the_same_run_folder(supervised, tmp_path):
    ray = pytest.importorskip("ray", reason="Ray rollouts need pip install -e '.[distributed]'")
    result, db = supervised
    cfg = rl_config(db, tmp_path, "reinforcement.updates=2")
    local = finetune(cfg, result.checkpoint_dir, output_dir=tmp_path / "local")
    sharded = cfg.model_copy(deep=True)
    sharded.reinforcement.rollout_workers = 1
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        remote = finetune(sharded, result.checkpoint_dir, output_dir=tmp_path / "ray")
    finally:
        ray.shutdown()
    assert {p.name for p in remote.run_dir.iterdir()} >= {"policy.pt", "state.pt"}
    assert len(pd.read_parquet(remote.rollouts_path)) == 2
    # one worker seeded like the learner plays the single-process path's first rollout
    first, other = local.history[0].as_row(), remote.history[0].as_row()
    assert first["mean_reward"] == other["mean_reward"] and first["env_steps"] == 48
