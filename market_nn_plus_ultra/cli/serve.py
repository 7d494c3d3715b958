"""``plus-ultra serve``: a trained run behind the HTTP API (FastAPI under uvicorn)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Annotated

import typer

from ..config import ServiceConfig, field_help, save_config
from ._common import ConfigOption, SetOption, console, fail, load, user_errors

# The service layer sits beside the CLI (neither imports the other): uvicorn loads the
# app factory by name, and the factory reads the resolved config from this variable.
_FACTORY = "market_nn_plus_ultra.service:create_app"
_CONFIG_ENV = "PLUS_ULTRA_CONFIG"


def serve(
    checkpoint: Annotated[
        Path,
        typer.Option(
            "--checkpoint", help="Run folder of `plus-ultra train` / `rl-finetune`, or a .ckpt."
        ),
    ],
    host: Annotated[
        str | None, typer.Option("--host", help=field_help(ServiceConfig, "host"))
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", min=1, max=65535, help=field_help(ServiceConfig, "port")),
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help=field_help(ServiceConfig, "device"))
    ] = None,
    max_prediction_rows: Annotated[
        int | None,
        typer.Option(
            "--max-prediction-rows", min=1, help=field_help(ServiceConfig, "max_prediction_rows")
        ),
    ] = None,
    api_key_env: Annotated[
        str | None,
        typer.Option("--api-key-env", help=field_help(ServiceConfig, "api_key_env")),
    ] = None,
    config: ConfigOption = None,
    overrides: SetOption = None,
) -> None:
    """Serve a trained run over HTTP: /predict (from the configured database or the
    caller's bars), /outcomes, /reload, /health, /ready, /config, /curriculum and /metrics
    (Prometheus), with the config's guardrails on every prediction. Mutating endpoints
    need the API key from the environment variable --api-key-env names.

    The model, features and windows come from the run's own config.yaml; the options,
    --config and --set supply the database, the guardrails and the service section (the
    resolved config is saved beside service.database). Stop with Ctrl-C or SIGTERM.

    Example: PLUS_ULTRA_API_KEY=... plus-ultra serve --config configs/default.yaml
    --checkpoint outputs/run --port 8000"""
    with user_errors():
        cfg = load(
            config,
            overrides,
            **{
                "service.checkpoint": checkpoint,
                "service.host": host,
                "service.port": port,
                "service.device": device,
                "service.max_prediction_rows": max_prediction_rows,
                "service.api_key_env": api_key_env,
            },
        )
        if not checkpoint.exists():
            raise fail(
                f"--checkpoint {checkpoint} does not exist — pass the run folder of "
                "`plus-ultra train` (training.checkpoint_dir) or a .ckpt inside it"
            )
        svc = cfg.service
        resolved = save_config(cfg, svc.database.with_name(f"{svc.database.stem}.config.yaml"))
    console.print(
        f"serving {checkpoint} on http://{svc.host}:{svc.port} (config: {resolved}, "
        f"log: {svc.database})",
        highlight=False,
    )
    _run(resolved, svc.host, svc.port)
    console.print(f"stopped; predictions logged in {svc.database}", highlight=False)


def _run(config_path: Path, host: str, port: int) -> None:
    """uvicorn on the app factory, which reads the resolved config from ``config_path``.

    uvicorn stops gracefully on SIGINT/SIGTERM and then re-raises the signal into the
    handlers it found; no-op handlers there make a requested stop a normal exit (0).
    """
    import uvicorn

    os.environ[_CONFIG_ENV] = str(config_path)
    previous = {s: signal.signal(s, _stopped) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        uvicorn.run(_FACTORY, factory=True, host=host, port=port, log_config=None, access_log=False)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(signum: int, frame: object) -> None:
    """The server's graceful shutdown already handled the stop."""
