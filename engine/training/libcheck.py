"""The experiment checked against the libraries' own classes: peft.LoraConfig, trl.SFTConfig,
transformers.TrainingArguments (and the training defaults that depend on the machine's torch).

On the training side of the layers: it imports peft, trl, transformers and torch (lazily, when a run
is validated or started), which engine/config/experiment.py, read by the CLI and the TUI, must not.
"""

from __future__ import annotations

import dataclasses

from labtui.engine.config.experiment import ConfigError, unknown_key


def _check_dataclass_keys(where: str, cls, values: dict, hint_for=None) -> None:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key, value in values.items():
        if key not in fields:
            err = unknown_key(where, key, fields)
            if hint_for and hint_for(key):
                err = ConfigError(f"{err} - it belongs to trl.SFTConfig; use trainer: sft")
            raise err
        kind = str(fields[key].type).replace("<class '", "").replace("'>", "")
        if value is None:
            continue
        if kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{key} must be true or false, got {value!r}")
        elif kind in ("int", "float"):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}.{key} must be a number, got {value!r}")


# Arguments labtui sets itself; a user value for them would be overwritten, so they are refused.
MANAGED_TRAINING_KEYS = {"output_dir", "logging_nan_inf_filter", "report_to"}


def with_platform_defaults(training: dict, trainer: str) -> dict:
    """TRL's SFTConfig turns bf16 on unless told otherwise, which fails on a CPU or an older GPU:
    default it to what this machine supports. An explicit bf16/fp16 in the file wins."""
    training = dict(training)
    if trainer == "sft" and "bf16" not in training and not training.get("fp16"):
        import torch

        training["bf16"] = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return training


def validate_with_libraries(cfg: dict, where: str) -> None:
    """Construct peft.LoraConfig and trl.SFTConfig / TrainingArguments from the config (heavy imports)."""
    import warnings

    training = dict(cfg.get("training") or {})
    for key in MANAGED_TRAINING_KEYS & set(training):
        raise ConfigError(f"{where}: training.{key} is set by labtui (the run directory holds the checkpoints and logs); remove it")
    if "completion_only_loss" in training:
        raise ConfigError(f"{where}: training.completion_only_loss is set from task.loss_on (answer: the answer only, "
                          f"all: prompt and answer); set that instead")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cfg.get("lora") is not None:
            from peft import LoraConfig

            _check_dataclass_keys(f"{where}: lora", LoraConfig, cfg["lora"])
            try:
                LoraConfig(**cfg["lora"])
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{where}: lora: {e}") from None
        training = with_platform_defaults(training, cfg["trainer"])
        from trl import SFTConfig

        if cfg["trainer"] == "sft":
            Args, hint_for = SFTConfig, None
        else:
            from transformers import TrainingArguments as Args

            sft_only = {f.name for f in dataclasses.fields(SFTConfig)}
            hint_for = sft_only.__contains__
        _check_dataclass_keys(f"{where}: training", Args, training, hint_for)
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            try:
                Args(output_dir=tmp, report_to="none", **training)
            except (TypeError, ValueError) as e:
                raise ConfigError(f"{where}: training: {e}") from None
