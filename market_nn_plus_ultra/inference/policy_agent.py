"""``PolicyAgent``: a ``plus-ultra rl-finetune`` run folder → the predictions frame.

    agent = Agent.from_checkpoint("outputs/rl")       # the folder holds policy.pt
    frame = agent.predict("data/market.db")            # Agent's columns, plus ``value``

``position`` is the policy's deterministic action (``tanh`` of the Gaussian mean, or the
most likely of short/flat/long), replayed bar by bar from the first bar with a full
window: one :class:`~market_nn_plus_ultra.rl.VectorTradingEnv` episode of one
environment over the whole history, so the portfolio the policy observes (position,
equity, unrealised PnL) evolves exactly as in training, through the same simulator step.
The episode always starts at the first bar and an observation at t reads rows up to t,
so a position never depends on ``start``/``end`` or on later bars. The book is the
predicted symbols (default: the run's). ``value`` is the critic's value of the state at
t. ``forecast`` and the probability / quantile columns come from the supervised head
applied to the fine-tuned backbone when the run started from a supervised run's head
(else ``forecast`` is NaN); ``sample`` labels the bars with the supervised run's splits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import Config, GuardrailsConfig, ModelConfig, WindowsConfig, load_config
from ..evaluation.sample import sample_bounds
from ..models import build_model
from ..rl import ActorCritic, EnvMarket, VectorTradingEnv
from ..rl.observe import target_levels
from ..rl.run_folder import POLICY_FORMAT
from ..training import CheckpointError
from ..training.data import normaliser_from_state
from ..training.safe_load import read_checkpoint
from ..windows import Normaliser, SlidingWindowDataset
from .agent import Agent, _find_checkpoint, _read_run_file, resolve_device
from .frame import finish_frame, prediction_items, read_run_panel

__all__ = ["PolicyAgent"]

_PROGRESS_EVERY = 256  # replay steps between progress callbacks
_ENCODE_BATCH = 256  # windows the backbone encodes at once in a replay


@dataclass
class PolicyAgent:
    """A fine-tuned policy with the data pipeline of its run, ready to predict.

    ``stage_settings``: the environment settings of the run's last update (cost
    multiplier and window of the curriculum stage in force); ``head``: the supervised
    head on the fine-tuned backbone (``None`` when the run started from a pretraining
    backbone); ``breaches``: as :attr:`Agent.breaches`.
    """

    policy: ActorCritic
    config: Config
    model_info: dict[str, Any]
    checkpoint: Path
    device: torch.device
    normaliser_state: dict[str, Any] | None
    stage_settings: dict[str, Any]
    head: Agent | None = None
    breaches: pd.DataFrame | None = None

    @classmethod
    def from_run(cls, path: str | Path, device: str | torch.device = "auto") -> PolicyAgent:
        """Restore the run folder of ``plus-ultra rl-finetune`` (or its ``policy.pt``)."""
        file, run = _find_checkpoint(Path(path))
        config = load_config(_read_run_file(run, "config.yaml", file))
        info = json.loads(_read_run_file(run, "model_info.json", file).read_text())
        raw = read_checkpoint(file)  # weights_only: a pickle that runs code is refused
        if raw.get("format") != POLICY_FORMAT:
            raise CheckpointError(
                f"{file}: not a policy written by `plus-ultra rl-finetune` (format "
                f"{raw.get('format')!r}) — pass the run folder of rl-finetune or of train"
            )
        model_cfg = ModelConfig.model_validate({**raw["model"], "compile": False})
        n_features = int(raw["n_features"])
        policy = ActorCritic.from_config(model_cfg, n_features, raw["action_mode"])
        try:
            policy.load_state_dict(raw["policy"])
        except RuntimeError as err:
            raise CheckpointError(
                f"{file}: the policy weights do not fit {model_cfg.architecture} with "
                f"{n_features} features ({str(err).splitlines()[0]}) — the file is damaged or "
                "from another version"
            ) from None
        resolved = resolve_device(device)
        policy.to(resolved).eval()
        config.model = model_cfg
        normaliser = raw.get("normaliser")
        head = None
        if raw.get("head"):
            model = build_model(model_cfg, n_features)
            weights = {f"backbone.{k}": v for k, v in policy.backbone.state_dict().items()}
            model.load_state_dict({**weights, **raw["head"]})
            model.to(resolved).eval()
            head = Agent(model, config, info, file, resolved, normaliser)
        settings = dict(raw.get("stage_settings") or {})
        return cls(policy, config, info, file, resolved, normaliser, settings, head)

    # ----------------------------------------------------------------------------------
    # What the policy reads
    # ----------------------------------------------------------------------------------

    @property
    def feature_columns(self) -> list[str]:
        """The panel columns behind the policy's F input channels, in order."""
        return list(self.model_info["feature_columns"])

    @property
    def sample_bounds(self) -> dict[str, Any]:
        """The supervised run's split bounds: which bars it trained, validated, tested on."""
        return sample_bounds(self.model_info)

    @property
    def window(self) -> int:
        """Bars W of the windows the predictions are made for (rows t-W+1 .. t)."""
        return int(self.config.windows.window)

    def _normaliser(self, symbols: list[str]) -> Normaliser | None:
        if self.config.windows.normalise != "train_zscore":
            return None
        if self.normaliser_state is None:
            raise CheckpointError(
                f"{self.checkpoint} has no normaliser statistics but the run uses "
                "windows.normalise=train_zscore — the file is incomplete; fine-tune again"
            )
        return normaliser_from_state(self.normaliser_state, symbols)

    # ----------------------------------------------------------------------------------
    # Predicting
    # ----------------------------------------------------------------------------------

    def predict(
        self,
        db: str | Path | None = None,
        symbols: Sequence[str] | None = None,
        start: str | pd.Timestamp | None = None,
        end: str | pd.Timestamp | None = None,
        *,
        batch_size: int = 1024,
        benchmark: str | None = None,
        on_batch: Callable[[int, int], None] | None = None,
        guardrails: GuardrailsConfig | None = None,
        one_pass: bool | None = None,
    ) -> pd.DataFrame:
        """Predictions for every (timestamp, symbol) with a full window, ``start..end``.

        The columns of :meth:`Agent.predict` (``forecast`` NaN without a supervised head)
        plus ``value``; ``position`` is the replayed policy's (see the module doc).
        ``on_batch(done, total)`` follows the replay's bars; ``batch_size`` and
        ``one_pass`` apply to the supervised head's forward passes.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        panel, windows = read_run_panel(self.config, self.feature_columns, db, symbols)
        market = EnvMarket.from_panel(panel, windows, self.config.simulation)
        market.normaliser = self._normaliser(list(market.tensors.symbols))
        dataset = SlidingWindowDataset.from_config(
            market.tensors,
            windows.model_copy(update={"stride": 1, "symbols_per_item": "one"}),
            normaliser=market.normaliser,
            require_targets=False,
        )
        items = prediction_items(dataset, start, end)
        positions, values = self.replay(market, windows, on_batch)
        t, s = dataset.item_keys(items)
        outputs: dict[str, np.ndarray] = {"position": positions[t, s]}
        if self.head is not None:
            head = self.head.outputs(dataset, items, batch_size, None, one_pass)
            outputs.update({k: v for k, v in head.items() if k != "position"})
        else:
            outputs["forecast"] = np.full(len(items), np.nan)
        outputs["value"] = values[t]
        if np.isnan(outputs["position"]).any():  # every predicted bar lies in the replay
            raise RuntimeError("policy replay: a predicted bar has no position")
        frame, self.breaches = finish_frame(
            dataset,
            items,
            outputs,
            db=Path(db) if db is not None else self.config.data.sqlite_path,
            benchmark=benchmark,
            bounds=self.sample_bounds,
            guardrails=guardrails,
            run=self.checkpoint,
        )
        return frame

    def replay(
        self,
        market: EnvMarket,
        windows: WindowsConfig,
        on_step: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The policy's positions ``[T, S]`` and the critic's values ``[T]`` over ``market``.

        One environment plays one episode from the first row with a full window
        (``windows.window``) to the last, under the run's last stage settings; rows
        before it are NaN. Raises ``ValueError`` when the portfolio is ruined (equity 0),
        since the env would end the episode there.
        """
        T, S = market.tensors.n_rows, market.tensors.n_symbols
        positions, values = np.full((T, S), np.nan), np.full(T, np.nan)
        W = int(windows.window)
        known = np.flatnonzero(np.asarray(market.tensors.mask, dtype=bool)[W - 1 :].any(axis=1))
        if not len(known):
            return positions, values
        first = W - 1 + int(known[0])
        steps = T - 1 - first
        if steps < 1:
            raise ValueError(
                f"only the last bar ({market.tensors.timestamps[first]}) has a full window of "
                f"{W} bars: the policy replays its portfolio from there and needs at least "
                "two — load more history"
            )
        env = self._env(market, windows, steps)
        levels = target_levels(env.device)
        continuous = self.policy.action_mode == "continuous"
        acted = torch.empty(steps + 1, S, device=env.device)
        valued = torch.empty(steps + 1, device=env.device)
        ruined = torch.zeros((), dtype=torch.bool, device=env.device)
        with torch.inference_mode():
            states = self._states(env, first, steps)  # (steps + 1, S, D), batched
            obs, _ = env.reset(options={"start_rows": [first]})
            for k in range(steps + 1):
                out = self.policy.heads(states[k : k + 1], obs["portfolio"])
                action = ActorCritic.mode(out)  # (1, S)
                acted[k] = action[0] if continuous else levels[action[0]]
                valued[k] = out.value[0]
                if k == steps:
                    break
                obs, _, terminated, _, info = env.step(action)
                ruined |= terminated[0]
                if k == steps - 1:  # the episode ends: its last observation is row T-1
                    obs = info["final_obs"]
                if on_step is not None and (k + 1) % _PROGRESS_EVERY == 0:
                    on_step(k + 1, steps + 1)
        if bool(ruined):
            raise ValueError(
                "the replayed policy lost its whole equity (equity <= 0): the environment "
                "ends the episode there and later positions are undefined"
            )
        if on_step is not None:
            on_step(steps + 1, steps + 1)
        positions[first:] = acted.double().cpu().numpy()
        values[first:] = valued.double().cpu().numpy()
        return positions, values

    def _states(self, env: VectorTradingEnv, first: int, steps: int) -> torch.Tensor:
        """The policy's per-symbol states (:meth:`ActorCritic.encode`) of every step of the
        episode from ``first``, encoded in batches of ``_ENCODE_BATCH`` windows.

        A step's window (and market state) is the market's, whatever the actions: the
        episode is walked once holding no position (which can never ruin it), its
        observations encoded together, and the heads then act step by step on the
        portfolio the real actions build — the same positions as encoding each step on
        its own (to float rounding), several times faster."""
        obs, _ = env.reset(options={"start_rows": [first]})
        flat = torch.zeros(1, env.n_symbols, device=env.device)
        if self.policy.action_mode != "continuous":
            flat = torch.ones(1, env.n_symbols, dtype=torch.long, device=env.device)  # 0
        parts, chunk = [], []
        for k in range(steps + 1):
            chunk.append({key: v for key, v in obs.items() if key != "portfolio"})
            if len(chunk) == _ENCODE_BATCH or k == steps:
                batch = {key: torch.cat([o[key] for o in chunk]) for key in chunk[0]}
                parts.append(self.policy.encode(batch))
                chunk = []
            if k == steps:
                break
            obs, _, _, _, info = env.step(flat)
            if k == steps - 1:  # the episode ends: its last observation is row T-1
                obs = info["final_obs"]
        return torch.cat(parts)

    def _env(self, market: EnvMarket, windows: WindowsConfig, steps: int) -> VectorTradingEnv:
        """One environment whose one episode covers ``steps`` bars, as the run trained."""
        cfg, rl = self.config, self.config.reinforcement
        cost = self.stage_settings.get("cost_multiplier", rl.env.cost_multiplier)
        env_cfg = rl.env.model_copy(
            update={
                "episode_length": steps,
                "split": "all",
                "stop_equity": 0.0,
                "check_actions": False,
                "high_vol_share": None,
                "cost_multiplier": float(cost),
            }
        )
        env = VectorTradingEnv(
            market,
            num_envs=1,
            env=env_cfg,
            reward=rl.reward,
            simulation=cfg.simulation,
            windows=windows,
            market_state=cfg.model.market_state_embedding,
            num_regimes=cfg.model.num_regimes,
            seed=cfg.seed,
            device=self.device,
        )
        window = self.stage_settings.get("window")
        if window is not None and int(window) != int(windows.window):
            env.configure(window=int(window))  # in force from the reset
        return env
