"""``Agent``: a trained run's checkpoint → the predictions frame of DESIGN.md.

    agent = Agent.from_checkpoint("outputs/run")          # best.ckpt, else last.ckpt
    frame = agent.predict("data/market.db", start="2024-01-01")
    frame.columns  # timestamp, symbol, position, forecast, [probs, quantiles], realised_return, …

The data path is the training one, reused piece by piece: ``compute_features`` (panel
read, alternative-data join, feature pipeline) with the run's ``data``/``features``
sections, ``build_tensors`` with its ``windows`` section and the model's feature columns
(from ``model_info.json``), and :class:`SlidingWindowDataset` with the same
normalisation — ``train_zscore`` statistics come from the checkpoint, fitted on the
training split only. Every (timestamp, symbol) cell with a full window gets a prediction;
a window ending at t reads rows ``t-W+1 .. t`` only, and every feature is causal, so a
prediction at t uses data up to t.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from ..config import Config, GuardrailsConfig, ModelConfig, load_config
from ..evaluation.sample import sample_bounds
from ..models import HeadOutput, TradingModel, build_model
from ..rl.run_folder import POLICY_FILE
from ..training import CheckpointError, MarketDataModule
from ..training.data import normaliser_from_state
from ..training.safe_load import read_checkpoint
from ..windows import MarketTensors, Normaliser, SlidingWindowDataset, build_tensors
from .frame import finish_frame, prediction_items, read_run_panel
from .one_pass import market_state, run_one_pass

if TYPE_CHECKING:
    from .policy_agent import PolicyAgent

__all__ = ["Agent", "resolve_device"]

log = logging.getLogger(__name__)

_CHECKPOINTS = ("best.ckpt", "last.ckpt")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → ``cuda:0`` when a GPU is visible, else ``cpu``; other names as given."""
    if str(device) == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device {device!r}: {err} — use cpu, cuda:0 or auto") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is visible — use --device cpu")
    return resolved


def _find_checkpoint(path: Path) -> tuple[Path, Path]:
    """``(checkpoint file, run folder)`` for a run folder or a ``.ckpt`` inside one."""
    if path.is_dir():
        for name in (*_CHECKPOINTS, POLICY_FILE):
            if (path / name).is_file():
                return path / name, path
        present = sorted(p.name for p in path.glob("*.ckpt"))
        raise CheckpointError(
            f"{path}: no best.ckpt or last.ckpt in this folder (checkpoints present: "
            f"{present or 'none'}), nor the {POLICY_FILE} of an rl-finetune run — pass the "
            "training.checkpoint_dir of a `plus-ultra train` run, one of its .ckpt files, or "
            "the --output-dir of `plus-ultra rl-finetune`"
        )
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist — pass a run folder (training.checkpoint_dir) "
            "or a .ckpt file inside it"
        )
    # steps/step-*.ckpt sit one folder below the run's config.yaml
    for folder in (path.parent, path.parent.parent):
        if (folder / "config.yaml").is_file():
            return path, folder
    return path, path.parent


def _read_run_file(run: Path, name: str, ckpt: Path) -> Path:
    path = run / name
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: {ckpt} needs the {name} that `plus-ultra train` writes beside "
            "it (the model's data pipeline) — copy the whole run folder, not the .ckpt alone"
        )
    return path


@dataclass
class Agent:
    """A trained model with the data pipeline it was trained on, ready to predict.

    ``config``: the run's resolved config; ``model_info``: ``model_info.json`` (feature
    columns, symbols, window, horizon, …); ``normaliser_state``: the ``train_zscore``
    statistics saved with the checkpoint (``None`` for other normalisations);
    ``breaches``: the guardrail breaches of the last ``predict(..., guardrails=...)``.
    """

    model: TradingModel
    config: Config
    model_info: dict[str, Any]
    checkpoint: Path
    device: torch.device
    normaliser_state: dict[str, Any] | None = None
    breaches: pd.DataFrame | None = None

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str | torch.device = "auto"
    ) -> Agent | PolicyAgent:
        """Restore a `plus-ultra train` run: a run folder (best.ckpt, else last.ckpt) or a
        ``.ckpt`` in it, with ``config.yaml`` and ``model_info.json`` beside it.

        A `plus-ultra rl-finetune` folder (or its ``policy.pt``) gives a
        :class:`~.policy_agent.PolicyAgent` with the same ``predict``. Raises
        :class:`~market_nn_plus_ultra.training.CheckpointError` naming the file and what is
        missing or does not fit.
        """
        ckpt_path, run = _find_checkpoint(Path(path))
        if ckpt_path.name == POLICY_FILE:
            from .policy_agent import PolicyAgent  # it builds on this module

            return PolicyAgent.from_run(ckpt_path, device)
        config = load_config(_read_run_file(run, "config.yaml", ckpt_path))
        info = json.loads(_read_run_file(run, "model_info.json", ckpt_path).read_text())
        for key in ("feature_columns", "n_features", "window"):
            if key not in info:
                raise CheckpointError(
                    f"{run / 'model_info.json'} has no {key!r} — it was not written by "
                    "`plus-ultra train`; retrain to get a complete run folder"
                )
        ckpt = read_checkpoint(ckpt_path)  # weights_only: a pickle that runs code is refused
        hp = ckpt.get("hyper_parameters", {})
        if "model" not in hp or "state_dict" not in ckpt:
            raise CheckpointError(
                f"{ckpt_path}: not a `plus-ultra train` checkpoint (no model hyper-parameters "
                "or weights) — a pretrained backbone.pt warm-starts `plus-ultra train`; "
                "predict from the trained run's folder"
            )
        if int(hp.get("n_features", info["n_features"])) != int(info["n_features"]):
            raise CheckpointError(
                f"{ckpt_path} has {hp['n_features']} input features but model_info.json lists "
                f"{info['n_features']} — the checkpoint and the run folder do not belong together"
            )
        model_cfg = ModelConfig.model_validate({**hp["model"], "compile": False})
        model = build_model(model_cfg, int(info["n_features"]))
        prefix = "model."
        weights = {
            k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)
        }
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{ckpt_path}: weights do not fit model {model_cfg.architecture}/{model_cfg.head}"
                f" — missing {missing[:5]}, unexpected {unexpected[:5]}"
            )
        config.model = model_cfg
        state = ckpt.get(MarketDataModule.__qualname__, {}) or {}
        resolved = resolve_device(device)
        model.to(resolved).eval()
        return cls(model, config, info, ckpt_path, resolved, state.get("normaliser"))

    # ----------------------------------------------------------------------------------
    # What the model reads
    # ----------------------------------------------------------------------------------

    @property
    def feature_columns(self) -> list[str]:
        """The panel columns behind the model's F input channels, in order."""
        return list(self.model_info["feature_columns"])

    @property
    def sample_bounds(self) -> dict[str, Any]:
        """The run's split bounds: which bars it trained, validated and tested on."""
        return sample_bounds(self.model_info)

    @property
    def window(self) -> int:
        """Bars W each prediction reads (rows t-W+1 .. t)."""
        return int(self.model_info["window"])

    def _normaliser(self, symbols: list[str]) -> Normaliser | None:
        if self.config.windows.normalise != "train_zscore":
            return None
        if self.normaliser_state is None:
            # An older checkpoint without the statistics: refit them exactly as training did.
            log.warning(
                "%s has no normaliser statistics; refitting on its training split", self.checkpoint
            )
            dm = MarketDataModule(self.config)
            dm.setup()
            from ..training.data import normaliser_state

            self.normaliser_state = normaliser_state(dm.normaliser, dm.symbols)
        return normaliser_from_state(self.normaliser_state, symbols)

    def tensors(
        self, db: str | Path | None = None, symbols: Sequence[str] | None = None
    ) -> MarketTensors:
        """Panel → features → tensors for ``db`` exactly as the training run built them.

        Reads from the run's ``data.start`` (so warm-up-dependent features match training)
        to the newest bar. ``symbols``: default the run's ``data.symbols``.
        """
        return build_tensors(*read_run_panel(self.config, self.feature_columns, db, symbols))

    def dataset(self, tensors: MarketTensors) -> SlidingWindowDataset:
        """Every window of ``tensors`` the model predicts, normalised as in training."""
        windows = self.config.windows.model_copy(update={"stride": 1, "symbols_per_item": "one"})
        return SlidingWindowDataset.from_config(
            tensors,
            windows,
            normaliser=self._normaliser(list(tensors.symbols)),
            require_targets=False,
        )

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

        Returns one row per cell, sorted by (timestamp, symbol): ``timestamp`` (UTC),
        ``symbol``, ``position`` in [-1, 1] (held over (t, t+1]), ``forecast`` (expected
        simple return t → t+1), ``prob_down/prob_flat/prob_up`` and ``q05/q50/q95``-style
        quantile columns (first forecast step) when the head has them, ``realised_return``
        (simple close-to-close return t → t+1 on the symbol's own bars; NaN on its last
        bar), ``benchmark_return`` (see :func:`~.benchmark.benchmark_returns`) and
        ``sample`` — ``train``/``val``/``test``/``unseen``, the run's split each bar belongs
        to (:func:`~market_nn_plus_ultra.evaluation.sample.label_samples`); the split
        bounds are in ``frame.attrs`` (kept by ``to_parquet``).
        ``on_batch(done, total)`` is called after each batch (progress bars).
        ``guardrails``: limits applied to the positions (exposure, turnover, tail risk,
        drawdown, sector caps; causal); the breaches land in :attr:`breaches`.
        ``one_pass``: run each symbol's history through the model in long chunks (see
        :mod:`.one_pass`) instead of one window per prediction — the same numbers, many
        times faster; default: whenever the model has a bounded look-back
        (``model.receptive_field``, set by ``training.supervision=all``).
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        tensors = self.tensors(db, symbols)
        dataset = self.dataset(tensors)
        items = prediction_items(dataset, start, end)
        outputs = self.outputs(dataset, items, batch_size, on_batch, one_pass)
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

    def outputs(
        self,
        dataset: SlidingWindowDataset,
        items: np.ndarray,
        batch_size: int = 1024,
        on_batch: Callable[[int, int], None] | None = None,
        one_pass: bool | None = None,
    ) -> dict[str, np.ndarray]:
        """The head's predictions-file columns for the windows ``items`` of ``dataset``."""
        if one_pass is None:
            one_pass = self.config.model.receptive_field is not None
        if one_pass:
            return run_one_pass(self, dataset, items, batch_size, on_batch)
        return self._run(dataset, items, batch_size, on_batch)

    def forward_columns(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        """The head's predictions-file columns for a batch of normalised windows
        ``x`` (B, W, F) — ``dataset.batch(items)["x"]`` of any datasets of this model's
        windows (a model without a market-state embedding)."""
        device, cuda = self.device, self.device.type == "cuda"
        x = x.to(device, non_blocking=cuda)
        with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=cuda):
            out = self.model(x, None)
        return self._columns(out)

    def _run(
        self,
        dataset: SlidingWindowDataset,
        items: np.ndarray,
        batch_size: int,
        on_batch: Callable[[int, int], None] | None,
    ) -> dict[str, np.ndarray]:
        """Forward every window in ``items`` in batches; per-output float64 columns."""
        device, cuda = self.device, self.device.type == "cuda"
        use_state = self.config.model.market_state_embedding
        parts: list[dict[str, np.ndarray]] = []
        total = -(-len(items) // batch_size)
        for k in range(total):
            batch = dataset.batch(items[k * batch_size : (k + 1) * batch_size])
            x = batch["x"].to(device, non_blocking=cuda)  # (B, W, F)
            state = None
            if use_state:
                rows = None
                if self.config.model.receptive_field is not None:  # trained per position
                    t, s = dataset.item_keys(items[k * batch_size : (k + 1) * batch_size])
                    rows = (dataset.input_rows(t, s), s[:, None])
                state = market_state(dataset.tensors, batch, rows, device)
            with torch.inference_mode(), torch.autocast("cuda", torch.bfloat16, enabled=cuda):
                out = self.model(x, state)
            parts.append(self._columns(out))
            if on_batch is not None:
                on_batch(k + 1, total)
        if not parts:  # no window in range: the same columns, zero rows
            n_features = int(self.model_info["n_features"])
            x = torch.zeros(1, self.window, n_features, device=device)
            with torch.inference_mode():
                return {k: v[:0] for k, v in self._columns(self.model(x)).items()}
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}

    def _columns(self, out: HeadOutput) -> dict[str, np.ndarray]:
        """The head's outputs as predictions-file columns (step 1 of multi-step outputs).

        Forecasts and quantiles are simple returns whatever the training target: a model
        trained on log returns has them mapped through ``expm1`` (exact for quantiles, the
        simple return of the forecast log return for the point forecast).
        """
        to_simple = np.expm1 if self.config.windows.target == "log_return" else (lambda v: v)
        columns = {
            "position": np.clip(_host(out.position), -1.0, 1.0),
            "forecast": to_simple(_host(out.forecast[:, 0])),
        }
        if out.probs is not None:
            p = _host(out.probs)  # (B, 3): down, flat, up
            columns.update(prob_down=p[:, 0], prob_flat=p[:, 1], prob_up=p[:, 2])
        if out.quantiles is not None:
            q = _host(out.quantiles[:, 0, :])  # (B, Q) at the first forecast step
            for j, level in enumerate(self.config.model.quantiles):
                columns[_quantile_name(level)] = to_simple(q[:, j])
        return columns


def _host(value: torch.Tensor) -> np.ndarray:
    return value.detach().float().cpu().numpy().astype(np.float64)


def _quantile_name(level: float) -> str:
    """``0.05`` → ``q05``, ``0.5`` → ``q50``, ``0.975`` → ``q97_5``."""
    pct = round(level * 100, 6)
    return f"q{int(pct):02d}" if pct == int(pct) else "q" + f"{pct:g}".replace(".", "_")
