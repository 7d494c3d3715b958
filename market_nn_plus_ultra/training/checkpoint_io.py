"""Lightning checkpoints written crash-safely.

Lightning's own ``TorchCheckpointIO`` serialises to memory and then writes the bytes
straight into the final file name, so a full disk or a kill during the write leaves a
truncated ``.ckpt`` under its real name (measured: a step checkpoint cut short by a full
disk, which ``--resume`` then fails on). :class:`AtomicCheckpointIO` writes every
checkpoint Lightning saves (``ModelCheckpoint``, ``trainer.save_checkpoint``) through
:func:`market_nn_plus_ultra._io.atomic_path`: temporary file beside the target, fsync,
rename. Loading is Lightning's, unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .._io import atomic_path

__all__ = ["AtomicCheckpointIO"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` whose saves are atomic: the old file or the new, never half.

    Pass it to the trainer: ``L.Trainer(plugins=[AtomicCheckpointIO()])``. Local paths
    only (remote ``s3://`` style paths are not used by this product).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                "AtomicCheckpointIO.save_checkpoint takes no storage_options — "
                "call trainer.save_checkpoint(path) without them"
            )
        with atomic_path(Path(path)) as tmp:
            torch.save(checkpoint, tmp)
