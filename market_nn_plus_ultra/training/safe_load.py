"""Reading checkpoints without running code: the one loader for ``.ckpt`` files.

A ``.ckpt`` is a zip of pickles, and a pickle can name any Python callable to call while
it loads (``os.system``, ``subprocess.run``, ...). :func:`read_checkpoint` loads with
``torch.load(weights_only=True)``: only tensors, numbers, strings, lists, tuples, dicts and
the few types PyTorch allow-lists are rebuilt, and a file that asks for anything else is
refused before any of it runs. Every checkpoint the product writes fits: the saved
hyper-parameters are plain dicts of the resolved config sections
(``TradingModule.save_hyperparameters``), the random-number states are tensors and
lists (``TradingModule.on_save_checkpoint``), and Lightning's loop, optimiser, scheduler
and callback states are dicts of tensors and numbers. Lightning's own resume
(``Trainer.fit(ckpt_path=...)``) is passed ``weights_only=True`` as well.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "read_checkpoint"]

# torch's refusal names the offending global: "Unsupported global: GLOBAL posix.system ..."
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


class CheckpointError(ValueError):
    """A checkpoint to resume, warm-start or predict from is missing, unsafe or does not fit."""


def _refusal(path: Path, label: str, err: Exception) -> CheckpointError:
    found = _GLOBAL.search(str(err))
    what = f"`{found.group(1)}`" if found else "a Python object that is not plain data"
    return CheckpointError(
        f"{label}{path}: refused — the file's pickle asks to build {what}, which a checkpoint "
        "written by plus-ultra never contains (only tensors, numbers, strings, lists and "
        "dicts), and loading it could run code on this machine. Nothing from it was run. "
        "Use a checkpoint you wrote yourself (retrain, or take last.ckpt / best.ckpt from "
        "your own run folder); if you trust this file, re-save its tensors with the tool "
        "that wrote it"
    )


def read_checkpoint(path: str | Path, label: str = "") -> Mapping[str, Any]:
    """Load ``path`` with ``weights_only=True`` onto the CPU; a mapping of its entries.

    ``label`` prefixes every message (``"--resume "`` names the option the path came
    from). Raises :class:`CheckpointError` for a file that would need arbitrary objects
    (named, and refused before they are built), for a truncated or foreign file, and
    for one whose top level is not a mapping.
    """
    path = Path(path)
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # "Unsupported operand": bytes that are no pickle at all (a damaged or foreign
        # file); any other weights-only failure is a pickle asking for something unsafe
        if "weights only" in str(err).lower() and "unsupported operand" not in str(err).lower():
            raise _refusal(path, label, err) from None
        raise CheckpointError(
            f"{label}{path}: not a readable checkpoint ({err}) — the file is damaged or not "
            "a torch checkpoint; use last.ckpt / best.ckpt from the run folder"
        ) from None
    except (OSError, EOFError, RuntimeError) as err:  # missing, truncated, not a zip
        raise CheckpointError(
            f"{label}{path}: not a readable checkpoint ({type(err).__name__}: {err}) — the "
            "file is truncated or not a torch checkpoint; use last.ckpt / best.ckpt or a "
            "steps/step-*.ckpt from the run folder"
        ) from None
    if not isinstance(raw, Mapping):
        raise CheckpointError(
            f"{label}{path}: expected a checkpoint mapping, got {type(raw).__name__} — pass a "
            ".ckpt written by `plus-ultra train`"
        )
    return raw
