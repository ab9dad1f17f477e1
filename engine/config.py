"""Experiment files: load, inherit (`extends`), override (`--set`), validate, diff.

This module is imported by the CLI and the TUI, so it imports nothing heavy at module level.
Validation against the libraries' own classes (peft.LoraConfig, trl.SFTConfig,
transformers.TrainingArguments) happens in `validate_with_libraries`, which imports them lazily.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import re
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    """A problem with an experiment file or an override; the message says what to change."""


# --- YAML -------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `5e-5` as a float (YAML 1.1 wants `5.0e-5`, users write `5e-5`)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def load_yaml(path: Path) -> dict:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment file must be a mapping of keys, got {type(data).__name__}")
    return data


def parse_value(text: str) -> Any:
    """A `--set` value: YAML scalar/list syntax (`64`, `5e-5`, `true`, `[q_proj, v_proj]`, `null`)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506
    except yaml.YAMLError:
        return text


# --- schema -----------------------------------------------------------------------------------

TRAINERS = ("sft", "trainer")
DATASET_FORMATS = ("pubmedqa", "hub", "jsonl_qa", "jsonl_sft")
EVAL_MODES = ("score", "generate")
EVAL_DEVICES = ("auto", "cpu", "cuda")

DEFAULTS: dict[str, Any] = {
    "description": "",
    "model": {
        "model_name_or_path": None,
        "dtype": "auto",
        "trust_remote_code": False,
        "revision": None,
        "attn_implementation": None,
    },
    "trainer": "sft",
    "lora": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": "all-linear", "task_type": "CAUSAL_LM"},
    "training": {},
    "dataset": {
        "format": "pubmedqa",
        "path": None,
        "test_split": None,
        "name": None,
        "config": None,
        "split": "train",
        "test_split_name": None,
        "eval_size": 50,
        "max_train_samples": None,
        "seed": 0,
    },
    "task": {
        "template": "Context: {context}\nQuestion: {question}\nAnswer:",
        "choices": ["yes", "no", "maybe"],
        "answer_prefix": " ",
        "max_length": 512,
        "max_context_chars": 3000,
    },
    "eval": {
        "n": 500,
        "mode": "score",
        "device": "auto",
        "split": "test",
        "temperatures": [0.0],
        "batch_size": 8,
        "max_new_tokens": 5,
        "dtype": None,
        "after_training": False,
        "seed": 0,
    },
    "engine": {
        "seed": 42,
        "empty_cache_every": 0,
        "sample_interval": 5.0,
        "heartbeat_interval": 5.0,
        "alerts": {},
    },
}

# Sections whose keys are checked here; `lora` and `training` are checked against the libraries.
_CHECKED_SECTIONS = ("model", "dataset", "task", "eval", "engine")
_TOP_KEYS = set(DEFAULTS) | {"extends", "name"}

_TYPES: dict[str, tuple[type, ...]] = {
    "model.model_name_or_path": (str,),
    "model.dtype": (str,),
    "model.trust_remote_code": (bool,),
    "dataset.path": (str,),
    "dataset.test_split": (str,),
    "dataset.eval_size": (int,),
    "dataset.max_train_samples": (int,),
    "task.template": (str,),
    "task.choices": (list,),
    "task.max_length": (int,),
    "task.max_context_chars": (int,),
    "eval.n": (int,),
    "eval.batch_size": (int,),
    "eval.max_new_tokens": (int,),
    "eval.temperatures": (list,),
    "eval.after_training": (bool,),
    "engine.seed": (int,),
    "engine.empty_cache_every": (int,),
    "engine.sample_interval": (int, float),
    "engine.heartbeat_interval": (int, float),
    "engine.alerts": (dict,),
    "description": (str,),
}


def closest(word: str, options) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def unknown_key(where: str, key: str, options) -> ConfigError:
    return ConfigError(f"{where}: unknown key '{key}'{closest(key, options)}")


# --- merging ----------------------------------------------------------------------------------


def deep_merge(base: dict, over: dict) -> dict:
    """`over` wins; dicts merge recursively, everything else (lists too) is replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def set_dotted(cfg: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = cfg
    for part in parts[:-1]:
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            raise ConfigError(f"--set {dotted}: '{part}' is not a section")
        node = node[part]
    node[parts[-1]] = value


def parse_overrides(items: list[str]) -> dict:
    over: dict = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item}: expected KEY=VALUE, for example --set training.learning_rate=5e-5")
        key, _, text = item.partition("=")
        key = key.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set {item}: expected KEY=VALUE, for example --set lora.r=64")
        set_dotted(over, key, parse_value(text.strip()))
    return over


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, dotted + "."))  # an empty section has no leaves
        else:
            out[dotted] = value
    return out


def diff(parent: dict | None, child: dict) -> dict[str, list]:
    """{dotted key: [parent value, child value]} for every leaf that differs."""
    if parent is None:
        return {}
    a, b = flatten(parent), flatten(child)
    skip = {"description", "name", "extends"}
    return {
        k: [a.get(k), b.get(k)]
        for k in sorted(set(a) | set(b))
        if k.split(".")[0] not in skip and a.get(k) != b.get(k)
    }


# --- loading ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Experiment:
    """A resolved experiment: `config` is complete (defaults filled) and validated by `check`."""

    path: Path
    name: str
    config: dict
    chain: list[Path]  # the file first, then what it extends, and so on
    parent_config: dict | None  # resolved config of the file it extends (for the diff)
    overrides: dict

    @property
    def changed(self) -> dict[str, list]:
        return diff(self.parent_config, self.config)


def _raw_chain(path: Path, seen: tuple[Path, ...] = ()) -> tuple[dict, list[Path], dict | None]:
    """Merge a file with its `extends` ancestors. Returns (merged raw, chain, parent's merged raw)."""
    path = Path(path).resolve()
    if path in seen:
        cycle = " -> ".join(p.name for p in (*seen, path))
        raise ConfigError(f"{path}: 'extends' cycle: {cycle}")
    raw = load_yaml(path)
    parent_name = raw.pop("extends", None)
    if parent_name is None:
        return raw, [path], None
    if not isinstance(parent_name, str):
        raise ConfigError(f"{path}: 'extends' must be a file name, got {parent_name!r}")
    parent_path = (path.parent / parent_name).resolve()
    if not parent_path.exists():
        raise ConfigError(f"{path}: extends '{parent_name}', but {parent_path} does not exist")
    parent_raw, chain, _ = _raw_chain(parent_path, (*seen, path))
    return deep_merge(parent_raw, raw), [path, *chain], parent_raw


def load_experiment(path: str | os.PathLike, overrides: list[str] | dict | None = None) -> Experiment:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: no such experiment file")
    raw, chain, parent_raw = _raw_chain(path)
    over = overrides if isinstance(overrides, dict) else parse_overrides(overrides or [])
    merged = deep_merge(raw, over)
    check_keys(merged, str(path))
    config = resolve(merged)
    config["name"] = merged.get("name") or path.stem
    parent = None
    if parent_raw is not None:
        parent = resolve(parent_raw)
        parent["name"] = parent_raw.get("name") or chain[1].stem
    elif over:
        parent = resolve(raw)  # with no parent file, overrides are the change
        parent["name"] = config["name"]
    return Experiment(path=path.resolve(), name=config["name"], config=config, chain=chain, parent_config=parent, overrides=over)


def resolve(raw: dict) -> dict:
    """Fill defaults. `lora: null` (full fine-tuning) stays null."""
    cfg = deep_merge(DEFAULTS, {k: v for k, v in raw.items() if k != "lora"})
    if "lora" in raw:
        cfg["lora"] = None if raw["lora"] is None else deep_merge(DEFAULTS["lora"], raw["lora"])
    return cfg


def check_keys(cfg: dict, where: str) -> None:
    """Unknown keys and wrong types in the sections labtui owns."""
    for key in cfg:
        if key not in _TOP_KEYS:
            raise unknown_key(where, key, _TOP_KEYS)
    for section in _CHECKED_SECTIONS:
        value = cfg.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{section}' must be a mapping, got {value!r}")
        allowed = DEFAULTS[section]
        for key in value:
            if key not in allowed:
                raise unknown_key(f"{where}: {section}", key, allowed)
    for section in ("lora", "training"):
        value = cfg.get(section)
        if value is not None and not isinstance(value, dict):
            raise ConfigError(f"{where}: '{section}' must be a mapping, got {value!r}")
    for dotted, types in _TYPES.items():
        value = _get(cfg, dotted)
        if value is None:
            continue
        if isinstance(value, bool) and bool not in types:
            ok = False
        else:
            ok = isinstance(value, types)
        if not ok:
            names = {int: "an integer", float: "a number", str: "a string", list: "a list", bool: "true or false", dict: "a mapping"}
            want = "a number" if set(types) == {int, float} else " or ".join(names[t] for t in types)
            raise ConfigError(f"{where}: {dotted} must be {want}, got {value!r}")
    alerts = (cfg.get("engine") or {}).get("alerts")
    if isinstance(alerts, dict) and alerts:
        from .alerts import check_alert_settings

        try:
            check_alert_settings(alerts)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None
    trainer = cfg.get("trainer", DEFAULTS["trainer"])
    if trainer not in TRAINERS:
        raise ConfigError(f"{where}: trainer must be one of {', '.join(TRAINERS)}, got {trainer!r}{closest(str(trainer), TRAINERS)}")
    choices = [("dataset.format", DATASET_FORMATS), ("eval.mode", EVAL_MODES), ("eval.device", EVAL_DEVICES)]
    for dotted, options in choices:
        value = _get(cfg, dotted)
        if value is not None and value not in options:
            raise ConfigError(f"{where}: {dotted} must be one of {', '.join(options)}, got {value!r}{closest(str(value), options)}")


def _get(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict):
            return None
        node = node.get(part)
    return node


def resolve_path(value: str | None, workspace: Path) -> Path | None:
    """Relative data and model paths are relative to the workspace."""
    if value is None:
        return None
    p = Path(os.path.expanduser(value))
    return p if p.is_absolute() else (workspace / p)


def looks_local(value: str) -> bool:
    """A model reference that is a path rather than a hub id (`org/name`)."""
    return value.startswith((".", "/", "~")) or value.count("/") != 1


def check_files(cfg: dict, workspace: Path, where: str) -> None:
    """Files the experiment names must exist before anything starts."""
    if not cfg["model"].get("model_name_or_path"):
        raise ConfigError(f"{where}: model.model_name_or_path is required (a hub id like google/gemma-3-4b-it or a local folder)")
    model = cfg["model"]["model_name_or_path"]
    local = resolve_path(model, workspace)
    if looks_local(model) and not local.exists():
        raise ConfigError(f"{where}: model.model_name_or_path: {local} does not exist")
    ds = cfg["dataset"]
    if ds["format"] == "hub":
        if not ds.get("name"):
            raise ConfigError(f"{where}: dataset.name is required with format: hub (for example qiaojin/PubMedQA)")
    else:
        if not ds.get("path"):
            raise ConfigError(f"{where}: dataset.path is required with format: {ds['format']}")
        for key in ("path", "test_split"):
            p = resolve_path(ds.get(key), workspace)
            if p is not None and not p.exists():
                raise ConfigError(f"{where}: dataset.{key}: {p} does not exist")
    template = cfg["task"]["template"]
    for field in re.findall(r"{(\w*)}", template):
        if field not in ("context", "question"):
            raise ConfigError(f"{where}: task.template uses {{{field}}}; only {{context}} and {{question}} are filled")
    if not cfg["task"]["choices"] or not all(isinstance(c, str) and c for c in cfg["task"]["choices"]):
        raise ConfigError(f"{where}: task.choices must be a list of non-empty strings")


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


def _check_lora_values(lora: dict, where: str) -> None:
    """What peft.LoraConfig itself accepts but fails on later (or silently misbehaves with)."""
    r = lora.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        raise ConfigError(f"{where}: lora.r must be a positive integer, got {r!r}")
    alpha = lora.get("lora_alpha")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise ConfigError(f"{where}: lora.lora_alpha must be a positive number, got {alpha!r}")
    dropout = lora.get("lora_dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ConfigError(f"{where}: lora.lora_dropout must be in [0, 1), got {dropout!r}")
    if lora.get("bias", "none") not in ("none", "all", "lora_only"):
        raise ConfigError(f"{where}: lora.bias must be none, all or lora_only, got {lora.get('bias')!r}")


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
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cfg.get("lora") is not None:
            from peft import LoraConfig

            _check_dataclass_keys(f"{where}: lora", LoraConfig, cfg["lora"])
            _check_lora_values(cfg["lora"], where)
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
