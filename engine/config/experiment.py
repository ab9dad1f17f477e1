"""Experiment files: the schema (each key's type, default and choices, once), load, inherit
(`extends`), override (`--set`), validate, diff.

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
from labtui.engine.rundir import alerts


class ConfigError(Exception):
    """A problem with an experiment file or an override; the message says what to change."""


# --- YAML -------------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads `5e-5` as a float (YAML 1.1 wants `5.0e-5`, users write `5e-5`) and,
    as YAML 1.2 does, only true/false as booleans: `choices: [yes, no, maybe]` is three strings."""


# ... and, as YAML 1.2 does, no base-60 integers: `time: 24:00:00` (slurm.time) is a string, not 86400
_INT = "tag:yaml.org,2002:int"
_INT_NO_BASE60 = re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$")
_Loader.yaml_implicit_resolvers = {
    first: [(tag, _INT_NO_BASE60 if tag == _INT else rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
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
# launch.launcher: one process, or the field's launchers for several (issue 13)
LAUNCHERS = ("python", "torchrun", "accelerate")
# launch.accelerate_config: these names are the accelerate configs shipped in the package; anything
# else is a path to the user's own YAML file (relative to the workspace)
ACCELERATE_PRESETS = ("multi_gpu", "zero2", "zero3", "fsdp")
# launch.executor: start the run on this machine, or hand it to Slurm (issue 14, engine/runtime/slurm.py)
EXECUTORS = ("local", "slurm")


class _NoDefault:
    """A key labtui checks but never fills in: the library's own default applies (lora.bias, training.*)."""

    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


@dataclasses.dataclass(frozen=True)
class Field:
    """One key: its type, its default, its range or its choices. `null` means "the default" to
    the code that reads it (in `launch` and `engine.alerts` it is replaced by the default)."""

    kind: str  # int | number | str | bool | list | dict | any (checked by `check` alone)
    default: Any = NO_DEFAULT  # what a file that omits the key gets (DEFAULTS); NO_DEFAULT: not filled in
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


def _short(value: Any) -> str:
    shown = repr(value)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _choices_error(value: list) -> str | None:
    if not value or not all(isinstance(c, str) and c.strip() for c in value):
        return f"task.choices must be a list of non-empty strings, got {_short(value)}"
    if len(set(value)) != len(value):
        return f"task.choices lists an answer twice: {_short(value)}"
    odd = [c for c in value if c != c.strip().lower()]
    if odd:  # evaluation compares them with the data's answers lowercased and stripped
        return f"task.choices are matched to the data's answers in lower case: write {odd[0].strip().lower()!r}, not {odd[0]!r}"
    return None


def _temperatures_error(value: list) -> str | None:
    if not value or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0 for t in value):
        return f"eval.temperatures must be a list of numbers, 0 (greedy) or more, got {_short(value)}"
    return None


def _target_modules_error(value: Any) -> str | None:
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(m, str) for m in value)):
        return None
    return f"lora.target_modules must be a module name pattern (all-linear) or a list of names, got {_short(value)}"


def _nproc_error(value: Any) -> str | None:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        return None
    return f"launch.nproc_per_node must be an integer, 1 or more, or auto (one process per visible GPU), got {_short(value)}"


_SLURM_TIME = re.compile(r"^(?:\d+-\d+(?::\d+){0,2}|\d+(?::\d+){0,2})$")


def _slurm_time_error(value: Any) -> str | None:
    """sbatch --time's forms: minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS (or UNLIMITED)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return None
    if isinstance(value, str) and (_SLURM_TIME.match(value) or value.upper() in ("UNLIMITED", "INFINITE")):
        return None
    return (f"slurm.time must be a time limit as sbatch --time takes it (\"24:00:00\", \"2-00:00:00\", or minutes), "
            f"got {_short(value)}")


def _slurm_mem_error(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return None
    if isinstance(value, str) and re.fullmatch(r"\d+[KMGTkmgt]?", value):
        return None
    return f"slurm.mem must be memory per node as sbatch --mem takes it (64G, 500M, or megabytes), got {_short(value)}"


def _sbatch_args_error(value: list) -> str | None:
    if all(isinstance(a, str) and a.startswith("-") and "\n" not in a for a in value):
        return None
    return f"slurm.sbatch_args must be a list of sbatch options as strings (\"--exclusive\", \"--constraint=a100\"), got {_short(value)}"


def _extra_args_error(value: list) -> str | None:
    if all(isinstance(a, str) for a in value):
        return None
    return f"launch.extra_args must be a list of strings (quote numbers: '3'), got {_short(value)}"


def _alert_kinds_error(key: str):
    """disable: any alert kind; stop_on: only the kinds the worker checks (it is the one that can stop)."""

    def error(value: list) -> str | None:
        if not all(isinstance(k, str) for k in value):
            return f"engine.alerts.{key} must be a list of alert kinds, got {_short(value)}"
        allowed = alerts.WORKER_KINDS if key == "stop_on" else tuple(alerts.KINDS)
        for kind in value:
            if kind not in allowed:
                match = difflib.get_close_matches(kind, list(allowed), n=1, cutoff=0.5)
                extra = f" (did you mean '{match[0]}'?)" if match else f"; one of {', '.join(allowed)}"
                if key == "stop_on" and kind in alerts.KINDS:
                    extra = f" (stop_on works for the checks the worker runs: {', '.join(alerts.WORKER_KINDS)})"
                return f"engine.alerts.{key}: unknown alert kind '{kind}'{extra}"
        return None

    return error


# `notify:` (engine/runtime/notify.py): apprise URLs (`urls`) and the events sent to them (`events`), in an
# experiment (that run) and in the workspace's labtui.yaml (every run), checked by the same fields. Not
# `on:`: YAML 1.1 reads that key as true.
NOTIFY_RUN_EVENTS = ("completed", "failed", "crashed", "stopped")
NOTIFY_EVENTS = (*NOTIFY_RUN_EVENTS, "eval_completed", *(f"alert:{s}" for s in alerts.SEVERITIES))
NOTIFY_DEFAULT_EVENTS = ["completed", "failed", "crashed", "eval_completed", "alert:critical"]


def _notify_urls_error(value: list) -> str | None:
    for url in value:
        if not (isinstance(url, str) and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://\S", url)):
            return (f"notify.urls must be a list of apprise URLs (\"ntfy://my-topic\", "
                    f"\"slack://T000/B000/XXXX\"), got {_short(url)}")
    return None


def _notify_events_error(value: list) -> str | None:
    for event in value:
        if event not in NOTIFY_EVENTS:
            extra = closest(str(event), NOTIFY_EVENTS) or f"; one of {', '.join(NOTIFY_EVENTS)}"
            if event == "alert":
                extra = " (write alert:critical, alert:warning or alert:info: alerts at or above that severity)"
            return f"notify.events: unknown event {_short(event)}{extra}"
    return None


def notify_error(section: Any, where: str) -> str | None:
    """What is wrong with a `notify:` section (of an experiment or of labtui.yaml), or None."""
    if section is None:
        return None
    if not isinstance(section, dict):
        return f"{where}: notify must be a mapping with urls and events, got {_short(section)}"
    for key, value in section.items():
        if key is True or key == "on":  # YAML 1.1 (labtui.yaml's reader) reads `on:` as true
            return f"{where}: notify: write `events:`, not `on:` (YAML 1.1 reads the key on as true)"
        if key not in _SECTIONS["notify"]:
            return str(unknown_key(f"{where}: notify", str(key), _SECTIONS["notify"]))
        error = check_field(f"notify.{key}", value)
        if error:
            return f"{where}: {error}"
    return None


def _alert_field(key: str, default: Any) -> Field:
    """The schema of one `engine.alerts` key. The keys and their defaults are the watchdogs' own
    (rundir.alerts.ALERT_DEFAULTS, which an old run's config.yaml is read against); the type
    follows the default: a list of kinds, a whole number >= 1, a number above 0 (or a flag, a word)."""
    if isinstance(default, list):
        return Field("list", default=default, check=_alert_kinds_error(key))
    if isinstance(default, (bool, str)):
        return Field("bool" if isinstance(default, bool) else "str", default=default)
    if isinstance(default, int):
        return Field("int", default=default, low=1, want="a whole number >= 1")
    return Field("number", default=default, low=0, low_open=True, want="a number above 0")


_POS_INT: dict[str, Any] = dict(kind="int", low=1, want="a positive integer")
_NONNEG_INT: dict[str, Any] = dict(kind="int", low=0, want="an integer, 0 or more")

# The one schema: every key labtui knows, with its type, default, range and choices, written once.
# DEFAULTS (what a file that omits a key gets) is built from it; the validator (`check_keys`), the
# CLI's argparse choices and the TUI's forms (`check_field`, CHOICES) all read it. Its order is the
# order of a resolved config (config.yaml, the Launch screen).
SCHEMA: dict[str, Field] = {
    "description": Field("str", default=""),
    "model.model_name_or_path": Field("str", default=None),
    "model.dtype": Field("str", default="auto", choices=DTYPES),
    "model.trust_remote_code": Field("bool", default=False),
    "model.revision": Field("str", default=None),
    "model.attn_implementation": Field("str", default=None),
    "trainer": Field("str", default="sft", choices=TRAINERS, nullable=False),
    # the library sections (lora: peft.LoraConfig, training: trl.SFTConfig / TrainingArguments): the keys
    # people change most are checked here, so a typo shows at once (the TUI's form); every other key
    # in them is checked by the libraries' own classes before a run starts (engine/training/libcheck.py)
    "lora.r": Field(**_POS_INT, default=16),
    "lora.lora_alpha": Field("number", default=32, low=0, low_open=True, want="a positive number"),
    "lora.lora_dropout": Field("number", default=0.05, low=0, high=1, high_open=True, want="in [0, 1)"),
    "lora.target_modules": Field("any", default="all-linear", check=_target_modules_error),
    "lora.task_type": Field("str", default="CAUSAL_LM"),
    "lora.bias": Field("str", choices=("none", "all", "lora_only")),
    "training": Field("dict", default={}),  # labtui fills in no TrainingArguments: the library's defaults hold
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
    "dataset.format": Field("str", default="pubmedqa", choices=DATASET_FORMATS, nullable=False),
    "dataset.path": Field("str", default=None),
    "dataset.test_split": Field("str", default=None),
    "dataset.name": Field("str", default=None),
    "dataset.config": Field("str", default=None),
    "dataset.split": Field("str", default="train"),
    "dataset.test_split_name": Field("str", default=None),
    "dataset.eval_size": Field(**_NONNEG_INT, default=50),
    "dataset.max_train_samples": Field(**_POS_INT, default=None),
    "dataset.seed": Field("int", default=0),
    "task.template": Field("str", default="Context: {context}\nQuestion: {question}\nAnswer:", check=_template_error,
                           nullable=False),
    "task.choices": Field("list", default=["yes", "no", "maybe"], check=_choices_error, nullable=False),
    "task.answer_prefix": Field("str", default=" "),
    "task.max_length": Field(**_POS_INT, default=512),
    "task.max_context_chars": Field("int", default=3000, low=0, want="an integer, 0 (no limit) or more"),
    # None: the trainer's usual target (LOSS_ON_DEFAULT), filled in by `resolve`
    "task.loss_on": Field("str", default=None, choices=LOSS_ON),
    "eval.n": Field("int", default=500, low=0, want="an integer, 0 (all) or more"),
    "eval.mode": Field("str", default="score", choices=EVAL_MODES),
    "eval.device": Field("str", default="auto", choices=EVAL_DEVICES),
    "eval.split": Field("str", default="test", choices=EVAL_SPLITS),
    "eval.temperatures": Field("list", default=[0.0], check=_temperatures_error),
    "eval.batch_size": Field(**_POS_INT, default=8),
    "eval.max_new_tokens": Field(**_POS_INT, default=5),
    "eval.dtype": Field("str", default=None, choices=EVAL_DTYPES),  # None: model.dtype
    "eval.after_training": Field("bool", default=False),
    "eval.seed": Field("int", default=0),
    "engine.seed": Field("int", default=42),
    "engine.empty_cache_every": Field("int", default=0, low=0, want="an integer, 0 (never) or more"),
    "engine.sample_interval": Field("number", default=5.0, low=0, low_open=True, want="a number of seconds above 0"),
    "engine.heartbeat_interval": Field("number", default=5.0, low=0, low_open=True, want="a number of seconds above 0"),
    # the watchdogs' thresholds (docs/watchdogs.md)
    **{f"engine.alerts.{key}": _alert_field(key, default) for key, default in alerts.ALERT_DEFAULTS.items()},
    # how the worker is started: one process, or torchrun / accelerate launch for several (issue 13)
    "launch.launcher": Field("str", default="python", choices=LAUNCHERS),
    "launch.nproc_per_node": Field("any", default="auto", check=_nproc_error),
    "launch.accelerate_config": Field("str", default=None),  # a preset (ACCELERATE_PRESETS) or a YAML file
    "launch.extra_args": Field("list", default=[], check=_extra_args_error),
    "launch.executor": Field("str", default="local", choices=EXECUTORS),
    # the job labtui submits with launch.executor: slurm (engine/runtime/slurm.py; null: the default)
    "slurm.partition": Field("str", default=None),
    "slurm.time": Field("any", default="24:00:00", check=_slurm_time_error),
    "slurm.gpus_per_node": Field(**_POS_INT, default=None),
    "slurm.nodes": Field(**_POS_INT, default=1),
    "slurm.cpus_per_task": Field(**_POS_INT, default=None),
    "slurm.mem": Field("any", default=None, check=_slurm_mem_error),
    "slurm.account": Field("str", default=None),
    "slurm.qos": Field("str", default=None),
    "slurm.sbatch_args": Field("list", default=[], check=_sbatch_args_error),
    "slurm.requeue": Field("bool", default=False),
    # notifications (engine/runtime/notify.py): apprise URLs and which events go to them
    "notify.urls": Field("list", default=[], check=_notify_urls_error),
    "notify.events": Field("list", default=NOTIFY_DEFAULT_EVENTS, check=_notify_events_error),
}

# Sections handed to a library: keys that SCHEMA does not name are the library's to check. Every
# other section is labtui's own, and a key it does not name there is refused (with the closest one).
_OPEN_SECTIONS = ("lora", "training")
# Sections where null means the default in the resolved config (their readers need every key).
_NULL_IS_DEFAULT = ("engine.alerts", "launch")


def _build_defaults(schema: dict[str, Field]) -> dict[str, Any]:
    """The nested defaults of every key that has one, in the schema's order."""
    out: dict[str, Any] = {}
    for dotted, spec in schema.items():
        if spec.default is NO_DEFAULT:
            continue
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(spec.default, dict) and isinstance(node.get(leaf), dict):
            continue
        node[leaf] = copy.deepcopy(spec.default)
    return out


DEFAULTS: dict[str, Any] = _build_defaults(SCHEMA)

_ABSENT = object()


def _get(cfg: dict, dotted: str, missing: Any = None) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return missing
        node = node[part]
    return node


def _section_keys() -> dict[str, tuple[str, ...]]:
    """{section: the keys it allows} for labtui's own sections, parents first (engine, engine.alerts)."""
    out: dict[str, tuple[str, ...]] = {}
    for dotted in SCHEMA:
        parts = dotted.split(".")
        if parts[0] in _OPEN_SECTIONS:
            continue
        for depth in range(1, len(parts)):
            section = ".".join(parts[:depth])
            out[section] = tuple(_get(DEFAULTS, section))
    return out


_SECTIONS = _section_keys()
_TOP_KEYS = set(DEFAULTS) | {"extends", "name"}

# {dotted key: allowed values} for every key with choices: argparse `choices=` and the TUI's forms.
CHOICES: dict[str, tuple] = {key: f.choices for key, f in SCHEMA.items() if f.choices}

_KIND_WORDS = {"int": "an integer", "number": "a number", "str": "a string", "bool": "true or false",
               "list": "a list", "dict": "a mapping", "any": "a value"}


def check_field(dotted_key: str, value: Any) -> str | None:
    """The error text for one value of one key (`'lora.r must be a positive integer, got 0'`), or
    None when it is fine or the key is not one labtui checks itself. Light: the TUI calls it as you type."""
    spec = SCHEMA.get(dotted_key)
    if spec is None:
        return None
    if value is None:
        return None if spec.nullable else f"{dotted_key} must be set, got null"
    kind = spec.kind
    got = f", got {_short(value)}"
    is_num = isinstance(value, (int, float)) and not isinstance(value, bool)
    ok = {
        "int": isinstance(value, int) and not isinstance(value, bool),
        "number": is_num,
        "str": isinstance(value, str),
        "bool": isinstance(value, bool),
        "list": isinstance(value, list),
        "dict": isinstance(value, dict),
        "any": True,
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
    """Fill defaults. `lora: null` (full fine-tuning) stays null; any other section given as null
    is its defaults, and so is a null key in `launch` and `engine.alerts` (their readers need each key)."""
    cfg = deep_merge(DEFAULTS, {k: v for k, v in raw.items() if k != "lora" and not (v is None and isinstance(DEFAULTS.get(k), dict))})
    if "lora" in raw:
        cfg["lora"] = None if raw["lora"] is None else deep_merge(DEFAULTS["lora"], raw["lora"])
    for section in _NULL_IS_DEFAULT:
        *parents, leaf = section.split(".")
        node = _get(cfg, ".".join(parents)) if parents else cfg
        if isinstance(node, dict):
            given = node.get(leaf)
            node[leaf] = deep_merge(_get(DEFAULTS, section), {k: v for k, v in given.items() if v is not None}
                                    if isinstance(given, dict) else {})
    if isinstance(cfg.get("task"), dict) and cfg["task"].get("loss_on") is None:
        cfg["task"]["loss_on"] = loss_on_default(cfg.get("trainer"))
    return cfg


def loss_on_default(trainer: str | None) -> str:
    return LOSS_ON_DEFAULT.get(trainer or DEFAULTS["trainer"], "answer")


def check_keys(cfg: dict, where: str) -> None:
    """Unknown keys in labtui's own sections, and every value the schema knows (its type, range,
    choices), then what only makes sense together (the launcher and its settings)."""
    for key in cfg:
        if key not in _TOP_KEYS:
            raise unknown_key(where, key, _TOP_KEYS)
    for key, default in DEFAULTS.items():
        value = cfg.get(key)
        if isinstance(default, dict) and value is not None and not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a mapping, got {_short(value)}")
    for section, allowed in _SECTIONS.items():
        value = _get(cfg, section)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{section}' must be a mapping, got {_short(value)}")
        if section == "notify" and (error := notify_error(value, where)):  # its `on:` mistake named
            raise ConfigError(error)
        for key in value:
            if key not in allowed:
                raise unknown_key(f"{where}: {section}", key, allowed)
    for dotted in SCHEMA:
        value = _get(cfg, dotted, _ABSENT)
        error = None if value is _ABSENT else check_field(dotted, value)
        if error:
            raise ConfigError(f"{where}: {error}")
    error = _launch_error(launch_settings(cfg))
    if error:
        raise ConfigError(f"{where}: {error}")


def launch_settings(cfg: dict | None) -> dict:
    """The `launch:` section with the defaults under it: a null or missing key (an old run's
    config.yaml has no `launch:`) is the default, one Python process."""
    given = (cfg or {}).get("launch")
    out = copy.deepcopy(DEFAULTS["launch"])
    if isinstance(given, dict):
        out.update({k: copy.deepcopy(v) for k, v in given.items() if k in out and v is not None})
    return out


def _launch_error(launch: dict) -> str | None:
    """Settings that the launcher chosen would not use: an error rather than a run that silently
    starts one process."""
    launcher = launch["launcher"]
    if launch["accelerate_config"] is not None and launcher != "accelerate":
        return (f"launch.accelerate_config is for accelerate launch, but launch.launcher is {launcher}; "
                f"set launch.launcher: accelerate (or remove launch.accelerate_config)")
    nproc = launch["nproc_per_node"]
    if launcher == "python" and nproc not in ("auto", 1):
        return (f"launch.nproc_per_node is {nproc}, but launch.launcher: python starts one process; "
                f"set launch.launcher: torchrun (or accelerate) to start {nproc}")
    return None


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
    check_accelerate_config(cfg, workspace, where)


def accelerate_config_path(value: str, workspace: Path) -> Path | None:
    """The user's own accelerate config file (relative to the workspace), or None for a preset."""
    return None if value in ACCELERATE_PRESETS else resolve_path(value, workspace)


def check_accelerate_config(cfg: dict, workspace: Path, where: str) -> None:
    """launch.accelerate_config names a preset or a YAML file that exists and reads as a mapping."""
    value = launch_settings(cfg)["accelerate_config"]
    path = None if value is None else accelerate_config_path(value, workspace)
    if path is None:
        return
    what = f"a YAML file, or a preset: {', '.join(ACCELERATE_PRESETS)}"
    if not path.exists():
        raise ConfigError(f"{where}: launch.accelerate_config: {path} does not exist ({what}){closest(value, ACCELERATE_PRESETS)}")
    if not path.is_file():
        raise ConfigError(f"{where}: launch.accelerate_config: {path} is not a regular file ({what})")
    try:
        load_yaml(path)  # bad YAML names the file and line now, not in a launcher's traceback
    except ConfigError as e:
        raise ConfigError(f"{where}: launch.accelerate_config: {e}") from None
