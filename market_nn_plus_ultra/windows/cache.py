"""Memory-mapped tensor cache: one folder of ``.npy`` files per dataset version.

A folder ``tensors-<key>/`` holds ``inputs.npy``, ``targets.npy``, ``mask.npy``,
``target_mask.npy``, ``present.npy``, ``timestamps.npy`` (int64 ns UTC), the optional
``regimes.npy``/``context.npy``/``missing.npy``/``simple_returns.npy`` and ``meta.json``
(labels). The key hashes the panel's
source version, the feature names, the horizon and the target, so a new database, a new
feature set or a new horizon gets a new folder and an unchanged one is reused.

Writes are atomic: everything goes into a hidden temporary folder beside the target,
which is renamed into place once complete, so a reader sees a whole cache or none.
Reads use ``np.load(mmap_mode="r")``: pages stream from disk as windows touch them and
the OS evicts them under memory pressure, so tensors larger than RAM still train.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .._io import atomic_dir
from ._panel import WindowsError, check_column, check_index, resolve_columns
from .tensors import MarketTensors

if TYPE_CHECKING:
    from ..config import WindowsConfig

__all__ = ["build_tensors", "open_memmap", "tensor_cache_key", "write_memmap"]

log = logging.getLogger(__name__)

_FORMAT = 2  # 2: per-symbol missing counts and the simple return beside log targets
_REQUIRED = ("inputs", "targets", "mask", "target_mask", "present")
_OPTIONAL = ("regimes", "context", "missing", "simple_returns")
_DEFAULT_ROOT = Path(".plus_ultra_cache") / "tensors"


def tensor_cache_key(
    panel: pd.DataFrame,
    feature_columns: Sequence[str],
    *,
    horizon: int,
    target: str,
    context_columns: Sequence[str] = (),
    regime_column: str | None = None,
    source_version: str | None = None,
) -> str:
    """Hex key of (panel version, features, horizon, target): equal keys ⇒ equal tensors.

    ``source_version`` identifies the panel's source (e.g. ``data.panel.cache_key(db, ...)``,
    which hashes a fingerprint of the database's content — SQLite's change counter, or
    the file's bytes in WAL mode — not only its mtime, plus the feature pipeline's
    version). Without it the panel's content is hashed (``pandas.util.hash_pandas_object``:
    about a second per few million rows). A source version built from file times alone
    would reuse stale tensors after a write whose mtime was restored.
    """
    if source_version is None:
        columns = list(dict.fromkeys([*feature_columns, *context_columns, "close"]))
        columns += [regime_column] if regime_column else []
        hashed = pd.util.hash_pandas_object(panel[columns], index=True).to_numpy()
        source_version = "content:" + hashlib.sha256(hashed.tobytes()).hexdigest()
    payload = {
        "format": _FORMAT,
        "source": source_version,
        "features": list(feature_columns),
        "context": list(context_columns),
        "regime": regime_column,
        "horizon": int(horizon),
        "target": target,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:24]


def _write_labels(tensors: MarketTensors, staged: Path, directory: Path) -> None:
    """Write the labels; ``meta.json`` last, as the marker of a complete cache."""
    np.save(staged / "timestamps.npy", tensors.timestamps.as_unit("ns").asi8)
    meta = tensors.meta() | {"format": _FORMAT, "version": tensors.version or directory.name}
    (staged / "meta.json").write_text(json.dumps(meta, indent=2))


def _already_published(directory: Path) -> None:
    """``directory`` appeared while we wrote: keep it if complete, else say how to fix it."""
    if (directory / "meta.json").exists():
        return  # another process published the same version first: keep theirs
    raise WindowsError(
        f"cannot publish tensor cache {directory}: the folder exists but is not a complete "
        "cache — delete it, or point windows.cache_dir elsewhere"
    )


def write_memmap(tensors: MarketTensors, directory: Path) -> MarketTensors:
    """Save every array as ``.npy`` in ``directory`` (atomically) and reopen it memory-mapped."""
    try:
        # A staged folder (fsynced, unique per process) renamed into place in one step.
        with atomic_dir(directory, replace=False) as staged:
            for name in (*_REQUIRED, *_OPTIONAL):
                array = getattr(tensors, name)
                if array is not None:
                    np.save(staged / f"{name}.npy", array)
            _write_labels(tensors, staged, directory)
    except FileExistsError:
        _already_published(directory)
    return open_memmap(directory)


def open_memmap(directory: Path) -> MarketTensors:
    """Open a cache folder read-only; arrays are ``np.memmap`` views of the files."""
    meta_path = directory / "meta.json"
    if not meta_path.exists():
        raise WindowsError(
            f"{directory} is not a tensor cache (no meta.json) — write one with "
            "MarketTensors.to_memmap(directory)"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != _FORMAT:
        raise WindowsError(
            f"{directory} was written by another cache format ({meta.get('format')}, expected "
            f"{_FORMAT}) — delete the folder and it is rebuilt on the next run"
        )
    arrays: dict[str, np.ndarray | None] = {}
    for name in (*_REQUIRED, *_OPTIONAL):
        path = directory / f"{name}.npy"
        if not path.exists() and name in _REQUIRED:
            raise WindowsError(
                f"{directory}: {path.name} is missing — delete the folder to rebuild"
            )
        arrays[name] = np.load(path, mmap_mode="r") if path.exists() else None
    stamps = np.load(directory / "timestamps.npy")
    return MarketTensors(
        **arrays,
        timestamps=pd.DatetimeIndex(stamps.view("datetime64[ns]")).tz_localize("UTC"),
        symbols=meta["symbols"],
        feature_names=meta["feature_names"],
        target=meta["target"],
        regime_labels=meta["regime_labels"],
        context_names=meta["context_names"],
        version=meta["version"],
    )


def _build_on_disk(panel: pd.DataFrame, directory: Path, key: str, **kwargs) -> MarketTensors:
    """Scatter the panel straight into ``.npy`` memmaps, so the tensors never sit in RAM."""
    try:
        with atomic_dir(directory, replace=False) as staged:

            def alloc(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
                return np.lib.format.open_memmap(
                    staged / f"{name}.npy", mode="w+", dtype=dtype, shape=shape
                )

            tensors = MarketTensors.from_panel(panel, alloc=alloc, **kwargs)
            tensors.version = key
            for name in (*_REQUIRED, *_OPTIONAL):
                array = getattr(tensors, name)
                if isinstance(array, np.memmap):
                    array.flush()
            _write_labels(tensors, staged, directory)
            del tensors
    except FileExistsError:
        _already_published(directory)
    return open_memmap(directory)


def build_tensors(
    panel: pd.DataFrame,
    cfg: WindowsConfig,
    *,
    source_version: str | None = None,
    cache_dir: str | Path | None = None,
) -> MarketTensors:
    """Tensors for ``panel`` under ``cfg``, from the memmap cache when one exists.

    A cached version is reopened memory-mapped. Otherwise tensors whose estimated size
    exceeds ``cfg.memmap_threshold_gb`` are built straight into a new cache folder and
    streamed from disk; smaller ones are built in memory (no files written). The cache
    folder is ``cfg.cache_dir``, else ``cache_dir``, else ``.plus_ultra_cache/tensors``.
    """
    check_index(panel)
    check_column(panel, "close", "close", "targets are forward returns of close")
    features, context = resolve_columns(
        panel, cfg.feature_columns, cfg.context_columns, cfg.regime_column
    )
    kwargs = {
        "feature_columns": features,
        "horizon": cfg.horizon,
        "target": cfg.target,
        "context_columns": context,
        "regime_column": cfg.regime_column,
    }
    key = tensor_cache_key(panel, source_version=source_version, **kwargs)
    root = Path(cfg.cache_dir or cache_dir or _DEFAULT_ROOT)
    folder = root / f"tensors-{key}"
    if (folder / "meta.json").exists():
        log.info("tensors: reusing memory-mapped cache %s", folder)
        return open_memmap(folder)
    index = panel.index
    size = MarketTensors.estimate_nbytes(
        len(index.levels[0]), len(index.levels[1]), len(features), cfg.horizon, len(context)
    )
    if size > cfg.memmap_threshold_gb * 1e9:
        log.info(
            "tensors: %.2f GB > %.2f GB, building memmap cache %s",
            size / 1e9,
            cfg.memmap_threshold_gb,
            folder,
        )
        return _build_on_disk(panel, folder, key, **kwargs)
    tensors = MarketTensors.from_panel(panel, **kwargs)
    tensors.version = key
    return tensors
