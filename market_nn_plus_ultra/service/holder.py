"""The model in service, and its atomic replacement.

:class:`ModelHolder` keeps one immutable :class:`Served` (the agent, its predictor, its
version). A request reads ``holder.current`` once and uses that object to the end, so a
reload never changes the model under a request in flight. :meth:`ModelHolder.load`
builds the new model completely — restore, check it fits the one in service (same
feature columns, window and symbols: the clients' requests and the prediction log stay
meaningful), warm it with a prediction — and only then swaps the reference. A load that
fails at any step leaves the old model serving.

Versions are ``<n>-<sha256[:12]>``: ``n`` counts successful loads of this process (so
versions only move forward), the digest names the checkpoint file's content.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ServiceError
from .outcomes import Expectation
from .predictor import Predictor

if TYPE_CHECKING:
    from ..config import DataConfig
    from ..inference import Agent

__all__ = ["ModelHolder", "Served"]

log = logging.getLogger(__name__)

_LOADABLE = (".ckpt", ".pt")


@dataclass(frozen=True)
class Served:
    """One loaded, validated and warmed model."""

    agent: Agent
    predictor: Predictor
    version: str
    checkpoint: Path
    run_dir: Path  # the folder holding config.yaml
    loaded_at: float  # unix seconds
    load_seconds: float
    expectation: Expectation


class ModelHolder:
    """Loads models off the request path and swaps them in atomically."""

    def __init__(self, data: DataConfig, device: str, max_batch: int = 32) -> None:
        self.data = data
        self.device = device
        self.max_batch = max_batch
        self._current: Served | None = None
        self._lock = threading.Lock()  # one load at a time
        self._loads = 0
        self._ready = threading.Event()
        self._loader: threading.Thread | None = None
        self.error: str | None = None  # why the start-up load failed

    @property
    def current(self) -> Served | None:
        """The model in service (None until the first load finishes)."""
        return self._current

    def require(self) -> Served:
        """The model in service, or a 503 that says why there is none yet."""
        served = self._current
        if served is None:
            why = self.error or "the model is still loading"
            raise ServiceError(503, f"no model in service: {why} — poll GET /ready")
        return served

    def start(self, checkpoint: Path, on_load) -> threading.Thread:
        """Load ``checkpoint`` in a background thread (the server answers meanwhile)."""

        def run() -> None:
            try:
                on_load(self.load(checkpoint))
            except ServiceError as err:
                self.error = err.detail
                log.error("start-up load failed: %s", err.detail)
            finally:
                self._ready.set()

        # Not a daemon: a process told to stop while a model loads exits after the load,
        # never in the middle of it (torch or numba torn down under a running thread abort
        # the process).
        thread = threading.Thread(target=run, name="model-load", daemon=False)
        thread.start()
        self._loader = thread
        return thread

    @property
    def loading(self) -> bool:
        """True while the start-up load of :meth:`start` runs."""
        return self._loader is not None and self._loader.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the start-up load finished (either way); True when a model serves."""
        self._ready.wait(timeout)
        return self._current is not None

    def load(self, checkpoint: str | Path) -> Served:
        """Restore, check, warm and swap in ``checkpoint``; the old model serves until then.

        Raises :class:`ServiceError` 422 for a path or file that cannot be served and 409
        for a model that does not fit the one in service; the old model keeps serving.
        """
        with self._lock:
            started = time.perf_counter()
            path = _checked_path(checkpoint)
            agent = _restore(path, self.device)
            old = self._current
            if old is not None:
                _check_fits(old.agent, agent, path)
            try:
                predictor = Predictor(agent, self.data, self.max_batch)
                predictor.normaliser(list(agent.model_info.get("symbols") or []))
                predictor.warm()
            except ServiceError as err:
                raise ServiceError(
                    422, f"{path}: the warm-up prediction failed: {err.detail}"
                ) from None
            except Exception as err:
                raise ServiceError(
                    422, f"{path}: the warm-up prediction failed ({type(err).__name__}: {err})"
                ) from None
            digest = _digest(agent.checkpoint)
            run = _run_dir(agent.checkpoint)
            expectation = _expectation(run)
            self._loads += 1
            served = Served(
                agent=agent,
                predictor=predictor,
                version=f"{self._loads}-{digest[:12]}",
                checkpoint=agent.checkpoint,
                run_dir=run,
                loaded_at=time.time(),
                load_seconds=time.perf_counter() - started,
                expectation=expectation,
            )
            self._current = served  # the swap: one reference assignment
            self.error = None
            return served


def _checked_path(checkpoint: str | Path) -> Path:
    try:
        path = Path(checkpoint)
        exists = path.exists()
    except (ValueError, OSError) as err:  # an embedded NUL, a name too long
        raise ServiceError(
            422, f"checkpoint {str(checkpoint)[:200]!r}: not a path ({err})"
        ) from None
    if not exists:
        raise ServiceError(
            422,
            f"checkpoint {path} does not exist — pass a run folder of `plus-ultra train` (or "
            "`rl-finetune`) or a .ckpt inside one",
        )
    if not path.is_dir() and path.suffix not in _LOADABLE:
        raise ServiceError(
            422, f"checkpoint {path}: pass a run folder or a .ckpt / .pt file inside one"
        )
    return path


def _restore(path: Path, device: str) -> Agent:
    """``Agent.from_checkpoint``; any failure of a damaged or foreign file is a 422."""
    from ..inference import Agent

    try:
        return Agent.from_checkpoint(path, device=device)
    except Exception as err:  # a corrupt file can fail anywhere in torch or pydantic
        text = str(err).strip() or type(err).__name__
        raise ServiceError(422, f"checkpoint {path} cannot be served: {text}") from None


def _check_fits(old: Agent, new: Agent, path: Path) -> None:
    """Refuse (409) a model whose inputs differ from the one in service."""
    problems = []
    a, b = old.feature_columns, new.feature_columns
    if a != b:
        lost = [c for c in a if c not in b]
        added = [c for c in b if c not in a]
        what = f"lacks {lost[:8]}, adds {added[:8]}" if lost or added else "are in another order"
        problems.append(f"feature columns differ (the new model {what})")
    if old.window != new.window:
        problems.append(f"window {old.window} → {new.window}")
    sa, sb = old.model_info.get("symbols"), new.model_info.get("symbols")
    if sa != sb:
        problems.append(f"symbols {sa} → {sb}")
    if problems:
        raise ServiceError(
            409,
            f"checkpoint {path} does not fit the model in service: {'; '.join(problems)} — "
            "restart the service with --checkpoint to serve a different model",
        )


def _run_dir(checkpoint: Path) -> Path:
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "config.yaml").is_file():
            return folder
    return checkpoint.parent


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _expectation(run: Path) -> Expectation:
    try:
        return Expectation.from_run(run)
    except Exception as err:  # a damaged parquet only loses the drift baseline
        log.warning("%s: no backtest expectation (%s)", run, err)
        return Expectation()
