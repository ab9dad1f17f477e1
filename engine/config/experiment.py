"""Experiment files: load, inherit (`extends`), override (`--set`), validate, diff.

This module is imported by the CLI and the TUI, so it imports nothing heavy at module level.
Validation against the libraries' own classes (peft.LoraConfig, trl.SFTConfig,
transformers.TrainingArguments) is engine/training/libcheck.py's, on the training side of the layers.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

import yaml


class ConfigError(Exception):
    """A problem with an experiment file or an override; the message says what to change."""


# --- YAML -------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `5e-5` as a float (YAML 1.1 wants `5.0e-5`, users write `5e-5`) and,
    as YAML 1.2 does, only true/false as booleans: `choices: [yes, no, maybe]` is three strings."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))

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


MAX_FILE_BYTES = 1_000_000  # an experiment file is a page of YAML; anything bigger is the wrong file
MAX_DEPTH = 20  # sections nest two or three deep; deeper is a broken or hostile file


def load_yaml(path: Path) -> dict:
    path = Path(path)
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError(f"{path}: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise ConfigError(f"{path}: {st.st_size:,} bytes is too big for an experiment file (at most {MAX_FILE_BYTES:,})")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8); an experiment file is YAML text") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to read (an experiment file nests a few levels)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: an experiment file must be a mapping of keys, got {type(data).__name__}")
    _check_depth(data, str(path))
    return data


def _check_depth(value: Any, where: str) -> None:
    """Refuse values nested deeper than MAX_DEPTH (iteratively: merging them later would recurse)."""
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: nested more than {MAX_DEPTH} levels deep; an experiment file nests a few")
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def parse_value(text: str) -> Any:
    """A `--set` value: YAML scalar/list syntax (`64`, `5e-5`, `true`, `[q_proj, v_proj]`, `null`)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506
    except (yaml.YAMLError, RecursionError):
        return text


# --- schema -----------------------------------------------------------------------------------

TRAINERS = ("sft", "trainer")
DATASET_FORMATS = ("pubmedqa", "hub", "jsonl_qa", "jsonl_sft")
DTYPES = ("auto", "float32", "bfloat16", "float16")
EVAL_MODES = ("score", "generate")
EVAL_DEVICES = ("auto", "cpu", "cuda")
EVAL_SPLITS = ("test", "eval", "train")
EVAL_DTYPES = DTYPES
LOSS_ON = ("all", "answer")
# task.loss_on when the file does not say: what each trainer does in a typical set-up. The plain
# transformers Trainer with the causal-LM collator learns every token (prompt and answer); TRL's
# SFTTrainer on prompt/completion data learns the completion only (completion_only_loss).
LOSS_ON_DEFAULT = {"trainer": "all", "sft": "answer"}
TEMPLATE_FIELDS = ("context", "question")

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
        "loss_on": None,  # None: the trainer's usual default (LOSS_ON_DEFAULT), filled in by `resolve`
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


@dataclasses.dataclass(frozen=True)
class Field:
    """What one key accepts: its type, its range or its choices. `null` always means "the default"."""

    kind: str  # int | number | str | bool | list | dict
    choices: tuple | None = None
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # low itself is refused
    high_open: bool = False
    want: str | None = None  # the phrase after "must be", when the range needs words
    check: Any = None  # a function(value) -> error text or None, for what a range cannot say
    nullable: bool = True


def _template_error(template: str) -> str | None:
    """A bad format string (`{context`), or a field the prompt cannot fill (`{abstract}`, `{}`)."""
    import string

    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        return f"task.template is not a valid format string ({e}); write literal braces as {{{{ and }}}}"
    for name in names:
        if name not in TEMPLATE_FIELDS:
            shown = "{" + name + "}"
            return f"task.template uses {shown}; only {{context}} and {{question}} are filled"
    return None


def _choices_error(value: list) -> str | None:
    if not value or not all(isinstance(c, str) and c.strip() for c in value):
        return f"task.choices must be a list of non-empty strings, got {repr(value)[:80]}"
    if len(set(value)) != len(value):
        return f"task.choices lists an answer twice: {repr(value)[:80]}"
    odd = [c for c in value if c != c.strip().lower()]
    if odd:  # evaluation compares them with the data's answers lowercased and stripped
        return f"task.choices are matched to the data's answers in lower case: write {odd[0].strip().lower()!r}, not {odd[0]!r}"
    return None


def _temperatures_error(value: list) -> str | None:
    if not value or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0 for t in value):
        return f"eval.temperatures must be a list of numbers, 0 (greedy) or more, got {repr(value)[:80]}"
    return None


_POS_INT: dict[str, Any] = dict(kind="int", low=1, want="a positive integer")
_NONNEG_INT: dict[str, Any] = dict(kind="int", low=0, want="an integer, 0 or more")

# The one schema: every key labtui checks itself, with its type, range and choices. The validator
# (`check_keys`), the CLI's argparse choices and the TUI's forms (`check_field`) all read it.
SCHEMA: dict[str, Field] = {
    "description": Field("str"),
    "trainer": Field("str", choices=TRAINERS, nullable=False),
    "model.model_name_or_path": Field("str"),
    "model.dtype": Field("str", choices=DTYPES),
    "model.trust_remote_code": Field("bool"),
    "model.revision": Field("str"),
    "model.attn_implementation": Field("str"),
    "dataset.format": Field("str", choices=DATASET_FORMATS, nullable=False),
    "dataset.path": Field("str"),
    "dataset.test_split": Field("str"),
    "dataset.name": Field("str"),
    "dataset.config": Field("str"),
    "dataset.split": Field("str"),
    "dataset.test_split_name": Field("str"),
    "dataset.eval_size": Field(**_NONNEG_INT),
    "dataset.max_train_samples": Field(**_POS_INT),
    "dataset.seed": Field("int"),
    "task.template": Field("str", check=_template_error, nullable=False),
    "task.choices": Field("list", check=_choices_error, nullable=False),
    "task.answer_prefix": Field("str"),
    "task.max_length": Field(**_POS_INT),
    "task.max_context_chars": Field("int", low=0, want="an integer, 0 (no limit) or more"),
    "task.loss_on": Field("str", choices=LOSS_ON),
    "eval.n": Field("int", low=0, want="an integer, 0 (all) or more"),
    "eval.mode": Field("str", choices=EVAL_MODES),
    "eval.device": Field("str", choices=EVAL_DEVICES),
    "eval.split": Field("str", choices=EVAL_SPLITS),
    "eval.dtype": Field("str", choices=EVAL_DTYPES),
    "eval.temperatures": Field("list", check=_temperatures_error),
    "eval.batch_size": Field(**_POS_INT),
    "eval.max_new_tokens": Field(**_POS_INT),
    "eval.after_training": Field("bool"),
    "eval.seed": Field("int"),
    "engine.seed": Field("int"),
    "engine.empty_cache_every": Field("int", low=0, want="an integer, 0 (never) or more"),
    "engine.sample_interval": Field("number", low=0, low_open=True, want="a number of seconds above 0"),
    "engine.heartbeat_interval": Field("number", low=0, low_open=True, want="a number of seconds above 0"),
    "engine.alerts": Field("dict"),
    # the library sections: the keys people change most, so a typo shows at once (the TUI's form);
    # everything else in them is checked by the libraries' own classes before a run starts
    "lora.r": Field(**_POS_INT),
    "lora.lora_alpha": Field("number", low=0, low_open=True, want="a positive number"),
    "lora.lora_dropout": Field("number", low=0, high=1, high_open=True, want="in [0, 1)"),
    "lora.bias": Field("str", choices=("none", "all", "lora_only")),
    "training.learning_rate": Field("number", low=0, want="a finite number, 0 or more"),
    "training.max_steps": Field("int", low=-1, want="an integer (-1: train num_train_epochs)"),
    "training.num_train_epochs": Field("number", low=0, low_open=True, want="a number above 0"),
    "training.per_device_train_batch_size": Field(**_POS_INT),
    "training.per_device_eval_batch_size": Field(**_POS_INT),
    "training.gradient_accumulation_steps": Field(**_POS_INT),
    "training.warmup_steps": Field("number", low=0, want="a number, 0 or more"),
    "training.weight_decay": Field("number", low=0, want="a finite number, 0 or more"),
    "training.max_grad_norm": Field("number", low=0, want="a finite number, 0 (no clipping) or more"),
    "training.logging_steps": Field("number", low=0, low_open=True, want="a number above 0"),
    "training.save_steps": Field("number", low=0, low_open=True, want="a number above 0"),
    "training.eval_steps": Field("number", low=0, low_open=True, want="a number above 0"),
    "training.max_length": Field(**_POS_INT),
}

# {dotted key: allowed values} for every key with choices: argparse `choices=` and the TUI's forms.
CHOICES: dict[str, tuple] = {key: f.choices for key, f in SCHEMA.items() if f.choices}

_KIND_WORDS = {"int": "an integer", "number": "a number", "str": "a string", "bool": "true or false",
               "list": "a list", "dict": "a mapping"}


def check_field(dotted_key: str, value: Any) -> str | None:
    """The error text for one value of one key (`'lora.r must be a positive integer, got 0'`), or
    None when it is fine or the key is not one labtui checks itself. Light: the TUI calls it as you type."""
    spec = SCHEMA.get(dotted_key)
    if spec is None:
        return None
    if value is None:
        return None if spec.nullable else f"{dotted_key} must be set, got null"
    kind = spec.kind
    shown = repr(value)
    got = f", got {shown if len(shown) <= 80 else shown[:77] + '...'}"
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": is_num,
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list),
        "dict": isinstance(value, dict),
    }[kind]
    if not ok:
        return f"{dotted_key} must be {_KIND_WORDS[kind]}{got}"
    if spec.choices is not None and value not in spec.choices:
        return f"{dotted_key} must be one of {', '.join(map(str, spec.choices))}{got}{closest(str(value), map(str, spec.choices))}"
    if kind in ("int", "number"):
        want = spec.want or _KIND_WORDS[kind]
        if not math.isfinite(value):
            return f"{dotted_key} must be {want}{got}"
        if spec.low is not None and (value < spec.low or (spec.low_open and value == spec.low)):
            return f"{dotted_key} must be {want}{got}"
        if spec.high is not None and (value > spec.high or (spec.high_open and value == spec.high)):
            return f"{dotted_key} must be {want}{got}"
    if spec.check is not None:
        return spec.check(value)
    return None


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
        key, text = key.strip(), text.strip()
        if not key or any(not p for p in key.split(".")):
            raise ConfigError(f"--set {item}: expected KEY=VALUE, for example --set lora.r=64")
        if not text:
            raise ConfigError(f"--set {item}: {key} has no value (write {key}=null for the default)")
        value = parse_value(text)
        _check_depth(value, f"--set {key}")
        set_dotted(over, key, value)
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
    if over and "description" not in over:
        # the run is not what the file describes: say what was changed on top of it
        with_text = "with " + ", ".join(_override_items(overrides, over))
        config["description"] = f"{config['description']} · {with_text}" if config.get("description") else with_text
    parent = None
    if parent_raw is not None:
        parent = resolve(parent_raw)
        parent["name"] = parent_raw.get("name") or chain[1].stem
    elif over:
        parent = resolve(raw)  # with no parent file, overrides are the change
        parent["name"] = config["name"]
    return Experiment(path=path.resolve(), name=config["name"], config=config, chain=chain, parent_config=parent, overrides=over)


def _override_items(given: list[str] | dict | None, over: dict) -> list[str]:
    """`key=value` for each override, as typed on the command line when it was typed there."""
    if isinstance(given, list):
        return [f"{k.strip()}={v.strip()}" for k, _, v in (item.partition("=") for item in given)]

    def text(v: Any) -> str:
        if isinstance(v, bool) or v is None:
            return {True: "true", False: "false", None: "null"}[v]
        if isinstance(v, list):
            return "[" + ", ".join(text(x) for x in v) + "]"
        return str(v)

    return [f"{k}={text(v)}" for k, v in flatten(over).items()]


def resolve(raw: dict) -> dict:
    """Fill defaults. `lora: null` (full fine-tuning) stays null."""
    cfg = deep_merge(DEFAULTS, {k: v for k, v in raw.items() if k != "lora"})
    if "lora" in raw:
        cfg["lora"] = None if raw["lora"] is None else deep_merge(DEFAULTS["lora"], raw["lora"])
    if isinstance(cfg.get("task"), dict) and cfg["task"].get("loss_on") is None:
        cfg["task"]["loss_on"] = loss_on_default(cfg.get("trainer"))
    return cfg


def loss_on_default(trainer: str | None) -> str:
    return LOSS_ON_DEFAULT.get(trainer or DEFAULTS["trainer"], "answer")


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
    for dotted in SCHEMA:
        value = _get(cfg, dotted, _ABSENT)
        error = None if value is _ABSENT else check_field(dotted, value)
        if error:
            raise ConfigError(f"{where}: {error}")
    alerts = (cfg.get("engine") or {}).get("alerts")
    if isinstance(alerts, dict) and alerts:
        from labtui.engine.rundir.alerts import check_alert_settings

        try:
            check_alert_settings(alerts)
        except ValueError as e:
            raise ConfigError(f"{where}: {e}") from None


_ABSENT = object()


def _get(cfg: dict, dotted: str, missing: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return missing
        node = node[part]
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
    if looks_local(model) and local is not None and not local.exists():
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
            if p is not None and not p.is_file():  # a folder, a device (/dev/zero never ends), a FIFO
                raise ConfigError(f"{where}: dataset.{key}: {p} is not a regular file")
