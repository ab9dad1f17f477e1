"""One-line explanations of the failures that end runs, with what to change.

No heavy imports: exceptions are recognised by class name and message.
"""

from __future__ import annotations

import os
import traceback

OOM_CUDA = ("CUDA out of memory: lower training.per_device_train_batch_size (raise gradient_accumulation_steps "
            "to keep the effective batch), set training.gradient_checkpointing: true, shorten task.max_length, "
            "or load the model in bfloat16 (model.dtype)")
OOM_HOST = ("host RAM exhausted: lower training.per_device_train_batch_size or dataset size, set "
            "training.dataloader_num_workers: 0, or close other programs")


def explain(e: BaseException) -> tuple[str, str | None]:
    """(one-line message, "file:line in function" of the innermost frame in user/engine code)."""
    name = type(e).__name__
    text = str(e).strip().splitlines()[0] if str(e).strip() else name
    where = _where(e)
    low = str(e).lower()
    if name == "OutOfMemoryError" or "cuda out of memory" in low or "cuda error: out of memory" in low:
        return f"{OOM_CUDA} ({text[:160]})", where
    if isinstance(e, MemoryError) or "cannot allocate memory" in low or "defaultcpuallocator: can't allocate" in low:
        return f"{OOM_HOST} ({text[:160]})", where
    if isinstance(e, KeyboardInterrupt):
        return "interrupted", where
    if name in ("RepositoryNotFoundError", "GatedRepoError") or (
        isinstance(e, OSError) and ("is not a valid model identifier" in low or "does not appear to have" in low
                                    or "we couldn't connect" in low or "can't load" in low)
    ):
        return (f"model not found or not reachable: {text[:200]} - check model.model_name_or_path (a local folder "
                f"with config.json, or a hub id and a network connection / `huggingface-cli login` for gated models)"), where
    if name == "DatasetNotFoundError" or (isinstance(e, FileNotFoundError) and "dataset" in low):
        return f"dataset not found: {text[:200]} - check dataset.path / dataset.name", where
    if name == "ConfigError":
        return text, where
    return f"{name}: {text[:300]}", where


def _where(e: BaseException) -> str | None:
    tb = traceback.extract_tb(e.__traceback__) if e.__traceback__ else []
    if not tb:
        return None
    frame = tb[-1]
    return f"{os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}"
