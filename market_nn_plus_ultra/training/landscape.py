"""Loss landscape of a trained run: the validation loss around θ along random directions.

    result = loss_landscape("outputs/run", points=21, plane_points=11, batches=4)
    result.parquet_path, result.html_path, result.center_loss

Li et al., "Visualizing the Loss Landscape of Neural Nets" (NeurIPS 2018). With the
trained weights θ and two random directions d1, d2, the run's own objective (the loss
:class:`~.module.TradingModule` logs as ``val_loss``: head loss, PnL/risk terms and the
backbone's auxiliary loss) is evaluated on the first ``batches`` validation batches at

    L(α)    = loss(θ + α·d1)              α ∈ [-span, span]     (``kind = "line"``)
    L(α, β) = loss(θ + α·d1 + β·d2)       α, β ∈ [-span, span]  (``kind = "plane"``)

Filter normalisation: each direction is Gaussian, then every filter — row ``i`` of a
weight matrix ``(out, in)``, output channel ``i`` of a conv kernel ``(out, in, k)`` — is
rescaled to the norm of the same filter of θ: ``d[i] ← d[i] / ‖d[i]‖ · ‖θ[i]‖``. A step
α = 1 then moves every filter by its own size, so landscapes of differently scaled
networks compare. Biases and normalisation parameters (every parameter with ≤ 1
dimension) are 0 in the direction, as in the paper's ``ignore='biasbn'``. Buffers
(rotary tables, running statistics) are not perturbed. The weights are restored after.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from .._io import atomic_path, atomic_write
from ..config import load_config
from .data import MarketDataModule
from .module import TradingModule
from .safe_load import CheckpointError, read_checkpoint

__all__ = [
    "LandscapeResult",
    "evaluate_loss",
    "filter_normalised_direction",
    "landscape_figure",
    "landscape_frame",
    "loss_landscape",
    "restore_module",
]

_CHECKPOINTS = ("best.ckpt", "last.ckpt")
PARQUET_NAME, HTML_NAME = "landscape.parquet", "landscape.html"


@dataclass(frozen=True)
class LandscapeResult:
    """Where the grid went and its headline numbers (losses in the run's loss units)."""

    parquet_path: Path
    html_path: Path
    checkpoint: Path
    center_loss: float  # loss(θ) on the same batches: the grid's (0, 0)
    line_min: float
    line_max: float
    plane_min: float
    plane_max: float
    batches: int
    windows: int  # validation items (windows, sequences or multi-symbol groups) averaged over
    seed: int


def _find_checkpoint(run: Path) -> Path:
    if run.is_file() and run.suffix == ".ckpt":
        return run
    if not run.is_dir():
        raise CheckpointError(
            f"{run} does not exist — pass the run folder of `plus-ultra train` "
            "(training.checkpoint_dir) or a .ckpt inside it"
        )
    for name in _CHECKPOINTS:
        if (run / name).is_file():
            return run / name
    present = sorted(p.name for p in run.glob("*.ckpt"))
    raise CheckpointError(
        f"{run}: no best.ckpt or last.ckpt in this folder (checkpoints present: "
        f"{present or 'none'}) — pass the folder a `plus-ultra train` run wrote"
    )


def restore_module(run: str | Path) -> tuple[TradingModule, MarketDataModule, Path]:
    """The run's :class:`TradingModule` (weights of best.ckpt, else last.ckpt), in eval
    mode on the CPU, with a :class:`MarketDataModule` rebuilt from its ``config.yaml``.

    Raises :class:`CheckpointError` naming the file that is missing or does not fit.
    """
    ckpt_path = _find_checkpoint(Path(run))
    folder = ckpt_path.parent
    if not (folder / "config.yaml").is_file() and (folder.parent / "config.yaml").is_file():
        folder = folder.parent  # steps/step-*.ckpt sit one folder below config.yaml
    config_path = folder / "config.yaml"
    if not config_path.is_file():
        raise CheckpointError(
            f"{config_path} is missing: the landscape rebuilds the validation split from the "
            "config `plus-ultra train` saves beside the checkpoint — copy the whole run folder"
        )
    ckpt = read_checkpoint(ckpt_path)  # weights_only: a pickle that runs code is refused
    hp = ckpt.get("hyper_parameters", {})
    if not {"model", "training", "n_features"} <= set(hp) or "state_dict" not in ckpt:
        raise CheckpointError(
            f"{ckpt_path}: not a `plus-ultra train` checkpoint (no model hyper-parameters or "
            "weights) — pass a supervised run's folder"
        )
    module = TradingModule(
        {**hp["model"], "compile": False},
        hp["training"],
        int(hp["n_features"]),
        float(hp.get("periods_per_year", 252.0)),
    )
    missing, unexpected = module.load_state_dict(ckpt["state_dict"], strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{ckpt_path}: weights do not fit the saved model config — missing "
            f"{list(missing)[:5]}, unexpected {list(unexpected)[:5]}"
        )
    cfg = load_config(config_path)
    return module.eval(), MarketDataModule(cfg), ckpt_path


def filter_normalised_direction(model: nn.Module, generator: torch.Generator) -> list[Tensor]:
    """One random direction shaped like ``model.parameters()``, filter-normalised.

    Per parameter ``p`` with ≥ 2 dimensions: ``d ~ N(0, 1)`` drawn on the CPU from
    ``generator``, then each filter ``d[i]`` (the slice along dim 0) is scaled to
    ``‖p[i]‖``; parameters with ≤ 1 dimension (biases, norm gains) get zeros.
    """
    directions = []
    for p in model.parameters():
        if p.ndim <= 1:
            directions.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator, dtype=torch.float32)
        theta = p.detach().float().cpu()
        d_norm = d.flatten(1).norm(dim=1)  # (out,)
        p_norm = theta.flatten(1).norm(dim=1)
        scale = p_norm / d_norm.clamp_min(1e-12)
        d = d * scale.view(-1, *([1] * (p.ndim - 1)))  # (out, ...) each filter to ‖θ[i]‖
        directions.append(d.to(device=p.device, dtype=p.dtype))
    return directions


@torch.no_grad()
def evaluate_loss(module: TradingModule, batches: list[dict[str, Tensor]]) -> float:
    """The run's objective averaged over ``batches``, weighted by windows per batch — the
    way Lightning aggregates the logged ``val_loss`` over an epoch."""
    total, count = 0.0, 0
    for batch in batches:
        loss, _, _ = module._step(batch)
        n = int(batch["x"].shape[0])
        total += float(loss) * n
        count += n
    return total / count


def _to(batch: dict[str, Tensor], device: torch.device) -> dict[str, Tensor]:
    return {k: v.to(device) if isinstance(v, Tensor) else v for k, v in batch.items()}


def _grid(points: int, span: float) -> np.ndarray:
    if points < 1:
        raise ValueError(f"landscape points={points}: need at least 1 (e.g. --points 21)")
    grid = np.linspace(-span, span, points) if points > 1 else np.zeros(1)
    if points % 2:  # an odd grid holds α = 0 exactly, not -1e-17
        grid[points // 2] = 0.0
    return grid


def landscape_frame(
    module: TradingModule,
    batches: list[dict[str, Tensor]],
    *,
    points: int = 21,
    plane_points: int = 11,
    span: float = 1.0,
    seed: int = 0,
    on_point: Callable[[int, int], None] | None = None,
) -> pd.DataFrame:
    """``alpha, beta, loss, kind`` for the line (``beta`` NaN) then the plane, row-major.

    ``plane_points=0`` skips the plane. ``on_point(done, total)`` is called after each
    grid point. The module's weights are the same tensors, values restored, on return.
    """
    if not batches:
        raise ValueError(
            "no validation batches to score: the run's validation split has no complete "
            "windows — retrain with a larger windows.val_fraction or more history"
        )
    generator = torch.Generator().manual_seed(int(seed))
    params = list(module.parameters())
    theta = [p.detach().clone() for p in params]
    d1 = filter_normalised_direction(module, generator)
    d2 = filter_normalised_direction(module, generator)
    line = [(a, float("nan"), "line") for a in _grid(points, span)]
    plane = [] if plane_points == 0 else [
        (a, b, "plane") for a in _grid(plane_points, span) for b in _grid(plane_points, span)
    ]  # fmt: skip
    rows = []
    module.eval()
    try:
        for i, (alpha, beta, kind) in enumerate([*line, *plane]):
            with torch.no_grad():
                for p, t, u, v in zip(params, theta, d1, d2, strict=True):
                    p.copy_(t + alpha * u if kind == "line" else t + alpha * u + beta * v)
            rows.append((float(alpha), beta, evaluate_loss(module, batches), kind))
            if on_point is not None:
                on_point(i + 1, len(line) + len(plane))
    finally:
        with torch.no_grad():
            for p, t in zip(params, theta, strict=True):
                p.copy_(t)
    return pd.DataFrame(rows, columns=["alpha", "beta", "loss", "kind"])


def landscape_figure(frame: pd.DataFrame, title: str = "loss landscape") -> object:
    """A plotly figure: the 1-D line (left) and the 2-D plane as a contour (right)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    line = frame[frame["kind"] == "line"]
    plane = frame[frame["kind"] == "plane"]
    fig = make_subplots(
        rows=1,
        cols=2 if len(plane) else 1,
        subplot_titles=("L(θ + α·d1)", "L(θ + α·d1 + β·d2)")[: 2 if len(plane) else 1],
    )
    fig.add_trace(
        go.Scatter(x=line["alpha"], y=line["loss"], mode="lines+markers", name="line"), 1, 1
    )
    fig.update_xaxes(title_text="α", row=1, col=1)
    fig.update_yaxes(title_text="validation loss", row=1, col=1)
    if len(plane):
        grid = plane.pivot(index="beta", columns="alpha", values="loss")  # (β, α)
        fig.add_trace(
            go.Contour(
                x=grid.columns.to_numpy(),
                y=grid.index.to_numpy(),
                z=grid.to_numpy(),
                colorscale="Viridis",
                contours={"showlabels": True},
                colorbar={"title": "loss"},
                name="plane",
            ),
            1,
            2,
        )
        fig.update_xaxes(title_text="α", row=1, col=2)
        fig.update_yaxes(title_text="β", row=1, col=2)
    fig.update_layout(title=title, template="plotly_white", showlegend=False)
    return fig


def _first_batches(loader: Iterable[dict[str, Tensor]], n: int) -> list[dict[str, Tensor]]:
    batches = []
    for batch in loader:
        if len(batches) >= n:
            break
        batches.append(batch)
    return batches


def loss_landscape(
    run: str | Path,
    *,
    points: int = 21,
    plane_points: int = 11,
    batches: int = 4,
    span: float = 1.0,
    seed: int = 0,
    device: str = "cpu",
    on_point: Callable[[int, int], None] | None = None,
) -> LandscapeResult:
    """Score the run's validation loss on a line and a plane through its weights; write
    ``landscape.parquet`` and ``landscape.html`` into the run folder.

    ``batches``: validation batches (``training.eval_batch_size`` windows each, in time
    order) the loss averages over — a cap that keeps each grid point fast. ``span``: the
    grid covers α, β ∈ [-span, span]. ``seed`` fixes the two directions.
    """
    if batches < 1:
        raise ValueError(f"--batches {batches}: need at least 1 validation batch")
    if span <= 0:
        raise ValueError(f"span={span}: the grid needs a positive half-width, e.g. 1.0")
    try:
        target = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device {device!r}: {err} — use cpu or cuda:0") from None
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA GPU is visible — use --device cpu")
    module, dm, ckpt_path = restore_module(run)
    module.to(target)
    dm.setup()
    scored = [_to(b, target) for b in _first_batches(dm.val_dataloader(), batches)]
    frame = landscape_frame(
        module,
        scored,
        points=points,
        plane_points=plane_points,
        span=span,
        seed=seed,
        on_point=on_point,
    )
    folder = ckpt_path.parent
    parquet_path, html_path = folder / PARQUET_NAME, folder / HTML_NAME
    meta = {"checkpoint": ckpt_path.name, "seed": seed, "batches": len(scored), "span": span}
    frame.attrs["landscape"] = json.dumps(meta)
    with atomic_path(parquet_path) as tmp:
        frame.to_parquet(tmp, index=False)
    fig = landscape_figure(frame, title=f"loss landscape — {ckpt_path}")
    atomic_write(html_path, fig.to_html(include_plotlyjs=True, full_html=True))  # offline
    line, plane = frame[frame["kind"] == "line"], frame[frame["kind"] == "plane"]
    center = frame.loc[(frame["alpha"] == 0.0) & (frame["kind"] == "line"), "loss"]
    return LandscapeResult(
        parquet_path=parquet_path,
        html_path=html_path,
        checkpoint=ckpt_path,
        center_loss=float(center.iloc[0]) if len(center) else evaluate_loss(module, scored),
        line_min=float(line["loss"].min()),
        line_max=float(line["loss"].max()),
        plane_min=float(plane["loss"].min()) if len(plane) else float("nan"),
        plane_max=float(plane["loss"].max()) if len(plane) else float("nan"),
        batches=len(scored),
        windows=sum(int(b["x"].shape[0]) for b in scored),
        seed=seed,
    )
