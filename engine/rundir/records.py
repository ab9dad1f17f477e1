"""The typed records of the run directory: each JSON file's keys and their types, spelled once.

    RunInfo       run.json        (launcher, once; an eval's run.json too)
    State         state.json      (supervisor, launcher, queue; `state()` adds what a reader derives)
    Progress      progress.json   (worker: the training callback or the evaluation worker)
    EnvInfo       env.json        (worker)
    EvalSettings  evals/<id>/eval.json     (CLI, then the evaluation worker)
    EvalSummary   evals/<id>/summary.json  (evaluation worker)
    Notified      notified.json   (runtime.notify: {event key: Notified}, each notification sent once)
    Row, Summary  a run's row (the TUI's run list) and `labtui runs --json` (store.Run.row / summary)
    EvalRow       an eval's row (analysis.evalstore.eval_row)

A reader takes a file through `clean(obj, fields_of(TD))` (store.Run.info() ... do it): a field of
the wrong type is left out, as if missing, so `"created": "yesterday"` reads as no creation time
rather than a TypeError in whatever formats it; a null stays null (writers clear a field so:
`"error": null`, hence every field type allows None); keys not declared here are kept as they are
(a newer writer's). The coercer of each field comes from its annotation: `Whole` is `as_whole`,
`Finite` `as_finite`, and so on (`fields_of`). Nothing here imports anything beyond the standard library.
"""

from __future__ import annotations

import functools
import math
import types
import typing
from typing import Annotated, Any, Callable, Final, Mapping, TypedDict, Union, cast

Coercer = Callable[[Any], Any]

# keys read in many places, as names (a TypedDict key may be a Final name): the same spelling as below
CHECKPOINT_STEP: Final = "checkpoint_step"  # eval.json, an eval's summary.json and its row: the evaluated step
TOKENS_PER_S: Final = "tokens_per_s"  # metrics.jsonl train records, progress.json, summaries: throughput


# --- coercers: each returns the value when it has the right type, else None ------------------------


def as_real(x: Any) -> int | float | None:
    """A number, NaN and Inf included (a NaN loss must stay visible); not a bool, not a string."""
    return x if type(x) is float or type(x) is int else None


def as_finite(x: Any) -> int | float | None:
    """A finite number: a time, a step, an epoch."""
    return x if type(x) is int or (type(x) is float and math.isfinite(x)) else None


def as_whole(x: Any) -> int | None:
    """An integer (80.0 reads as 80): a step, a pid, an exit code."""
    if type(x) is int:
        return x
    return int(x) if type(x) is float and x.is_integer() else None


def as_text(x: Any) -> str | None:
    return x if isinstance(x, str) else None


def as_flag(x: Any) -> bool | None:
    return x if isinstance(x, bool) else None


def as_mapping(x: Any) -> dict | None:
    return x if isinstance(x, dict) else None


def as_list(x: Any) -> list | None:
    return x if isinstance(x, list) else None


def as_texts(x: Any) -> list | None:
    return x if isinstance(x, list) and all(isinstance(v, str) for v in x) else None


def as_reals(x: Any) -> list | None:
    """A list of finite numbers: an interval."""
    return x if isinstance(x, list) and all(as_finite(v) is not None for v in x) else None


def as_wholes(x: Any) -> list | None:
    return x if isinstance(x, list) and all(type(v) is int for v in x) else None


def as_changed(x: Any) -> dict | None:
    """run.json's `changed`, {key: [parent value, value]}: the well-formed entries."""
    if not isinstance(x, dict):
        return None
    return {k: v for k, v in x.items() if isinstance(k, str) and isinstance(v, (list, tuple)) and len(v) == 2}


def clean(obj: Any, fields: Mapping[str, Coercer]) -> dict:
    """`obj` (a parsed JSON file) as a dict whose known `fields` have their types: a field of the wrong
    type is left out, as if missing; a null stays null; other keys are kept as they are. Not a dict: {}."""
    if not isinstance(obj, dict):
        return {}
    out = {}
    for key, value in obj.items():
        coerce = fields.get(key)
        if coerce is not None and value is not None:
            value = coerce(value)
            if value is None:
                continue
        out[key] = value
    return out


# --- field types: what a value is, and the coercer that checks it ------------------------------------
# Every one allows None: a null stays null.

Text = Annotated[str | None, as_text]
Flag = Annotated[bool | None, as_flag]
Whole = Annotated[int | None, as_whole]  # a step, a pid, an exit code, a count
Finite = Annotated[float | None, as_finite]  # a time (Unix seconds), an epoch, a duration
Real = Annotated[float | None, as_real]  # a loss or a rate: NaN and Inf stay (a NaN loss must be seen)
Texts = Annotated[list[str] | None, as_texts]
Reals = Annotated[list[float] | None, as_reals]  # finite numbers: an interval
Wholes = Annotated[list[int] | None, as_wholes]
Items = Annotated[list[Any] | None, as_list]
Object = Annotated[dict[str, Any] | None, as_mapping]
Changed = Annotated[dict[str, list[Any]] | None, as_changed]  # {key: [parent value, value]}


# --- the files ------------------------------------------------------------------------------------


class RunInfo(TypedDict, total=False):
    """run.json: written once when the run (or eval) folder is made."""

    id: Text
    created: Finite
    experiment: Text
    experiment_file: Text
    chain: Texts  # the experiment files it extends, base first
    description: Text
    kind: Text  # train | script | base | eval
    parent: Text  # the run it was derived from (a retry, a changed copy)
    parent_experiment: Text
    changed: Changed
    overrides: Object
    command: Texts  # the labtui command line that made it
    script_command: Texts  # a `script` run: the command the worker runs
    workspace: Text
    cwd: Text  # a `script` run: where its command runs
    run: Text  # an eval: the evaluated run's id (null for a base model)
    group: Text  # the group a run belongs to: the runs of one `labtui sweep` (Workspace.runs_in_group)


class SlurmJob(TypedDict, total=False):
    """state.json's `slurm`: a Slurm run's job as the last reconciliation saw it (runtime.slurm_runs)."""

    job_id: Text
    cluster: Text
    state: Text  # Slurm's job state: PENDING, RUNNING, TIMEOUT, ...
    reason: Text  # why it is pending (Resources, Priority, ...)
    node: Text
    submitted: Finite
    checked: Finite
    job_ids: Texts  # every job submitted for the run (a resume submits another)


class State(TypedDict, total=False):
    """state.json: the lifecycle (supervisor, launcher, queue). `store.Run.state()` folds in the
    worker's `result` and adds what a reader derives: `crash_detected_by`, `warning`."""

    status: Text  # store.STATUSES
    created: Finite
    updated: Finite
    started: Finite
    ended: Finite
    heartbeat: Finite
    resumed: Finite  # when the supervisor started it again (a resume)
    pid: Whole
    pgid: Whole
    pid_start: Finite  # the worker's process start time: a reused pid does not look alive
    supervisor_pid: Whole
    supervisor_start: Finite
    host: Text
    exit_code: Whole
    exit_signal: Text
    error: Text
    error_where: Text  # where it failed (a multi-process run: the failed rank's traceback)
    error_rank: Whole  # a multi-process run: the rank that failed first
    launch: Object  # a training run: how it is launched (runtime.launcher.launch_plan), or null
    command: Texts
    after_run: Text  # "evaluating" while the supervisor runs the evaluation after training
    queued: Flag
    queued_resume: Flag  # the queue starts it again with --resume
    executor: Text  # "slurm" for a run submitted to Slurm (runtime.slurm_runs); absent for a local run
    slurm: SlurmJob  # a Slurm run's job: job_id, cluster, state, reason, node, submitted, checked, job_ids
    warning: Text  # e.g. store.SUPERVISOR_GONE (derived)
    crash_detected_by: Text  # "reader": no supervisor recorded the crash (derived)


class Progress(TypedDict, total=False):
    """progress.json: the latest numbers (worker). An eval's progress counts examples: `done`, `total`,
    `correct`, `accuracy_so_far`, `examples_per_s`, `n` (with step = done, max_steps = total)."""

    status: Text
    started: Finite
    updated: Finite
    step: Whole
    max_steps: Whole
    epoch: Finite
    train_loss: Real
    eval_loss: Real
    best_eval_loss: Real
    best_step: Whole
    grad_norm: Real
    learning_rate: Real
    tokens: Finite
    tokens_per_s: Real  # store.TOKENS_PER_S
    tokens_per_s_avg: Real
    samples_per_s: Real
    steps_per_s: Real
    last_log_t: Finite
    checkpoint: Text  # the newest checkpoint's path
    result: State | None  # the worker's end: status, error, error_where, ended (folded into the state)
    done: Whole
    total: Whole
    n: Whole
    correct: Whole
    accuracy_so_far: Finite
    examples_per_s: Real


class EnvInfo(TypedDict, total=False):
    """env.json: the environment the worker ran in (an eval's adds dtype, cudnn, gpu_capability, cuda_hidden)."""

    python: Text
    platform: Text
    host: Text
    argv: Texts
    pid: Whole
    torch: Text
    transformers: Text
    peft: Text
    trl: Text
    datasets: Text
    accelerate: Text
    cuda: Text
    cuda_available: Flag
    device: Text
    device_name: Text
    device_count: Whole
    torch_threads: Whole
    workspace_git: Text
    command: Texts
    dtype: Text
    cudnn: Whole
    gpu_capability: Wholes
    cuda_hidden: Flag  # --device cpu: CUDA_VISIBLE_DEVICES was emptied for the eval


class EvalSettings(TypedDict, total=False):
    """eval.json: what an eval evaluates and how (the CLI writes what was asked, the worker adds
    `*_actual`, `n_requested`, `load_s` and the actual `n`)."""

    checkpoint: Text  # the resolved path, or "base"
    checkpoint_spec: Text  # what was asked: latest | best | STEP | base | a folder
    checkpoint_step: Whole  # store.CHECKPOINT_STEP: the evaluated training step (0 for base)
    mode: Text  # score | generate
    device: Text  # asked
    device_actual: Text
    split: Text
    n: Whole
    n_requested: Whole
    temperatures: Reals
    batch_size: Whole
    max_new_tokens: Whole
    dtype: Text  # asked
    dtype_actual: Text
    seed: Whole
    choices: Texts
    purpose: Text  # eval | parity
    load_s: Finite
    created: Finite


class EvalSummary(TypedDict, total=False):
    """summary.json: an eval's result (analysis.evalstore.summarize, and the worker's additions)."""

    n: Whole
    accuracy: Finite
    ci: Reals  # [lo, hi], 95% Wilson
    macro_f1: Finite
    confusion: Object  # {gold: {pred: count}}
    labels: Texts
    errors: Object  # {error kind: count}
    pred_counts: Object
    gold_counts: Object
    tokens: Finite
    tokens_per_s: Real
    examples_per_s: Real
    wall_s: Finite
    warnings: Texts
    degenerate: Flag
    suggest_cpu_rerun: Flag
    cpu_rerun_command: Text
    device: Text
    device_name: Text
    dtype: Text
    mode: Text
    split: Text
    checkpoint: Text
    checkpoint_step: Whole
    per_temperature: Object  # {"0.0": {n, accuracy, ci, errors, warnings}} (generate mode)
    temperatures: Items  # [null] in score mode
    partial: Flag
    load_s: Finite
    eval_id: Text
    run: Text
    created: Finite


class Notified(TypedDict, total=False):
    """An entry of notified.json, {event key: Notified} (runtime.notify): one notification, claimed by the
    first process to write its key (`sending`), then the sender's outcome."""

    event: Text  # completed | failed | crashed | stopped | eval_completed | alert:<severity>
    t: Finite  # when it was claimed (again, for a re-send)
    title: Text
    body: Text
    to: Whole  # how many URLs it goes to
    status: Text  # sending | sent | failed | dropped
    pid: Whole  # the sender process, while it sends
    pid_start: Finite  # its start time (a reused pid does not look alive)
    host: Text  # where it runs (a pid means nothing on another host sharing the workspace)
    resent: Whole  # how many times it was claimed again after a sender died mid-send
    sent: Finite  # when the sender finished
    ok: Texts  # the URLs it reached (secrets hidden)
    failed: Object  # {URL: why} of those it did not
    error: Text  # why nothing was sent (rate limit, the sender's own failure)


# --- derived rows (not files): what store.Run.row and summary return -----------------------------

JsonReal = float | str | None  # a number, or "nan" / "inf" / "-inf" where JSON must carry one (store.jsonable)


class Summary(TypedDict):
    """A row of `labtui runs --json` (store.Run.summary; store.SUMMARY_FIELDS is its keys, in this order)."""

    id: str
    experiment: str
    description: str
    kind: str
    status: str
    step: int
    max_steps: int | None
    epoch: JsonReal
    created: JsonReal
    started: JsonReal
    ended: JsonReal
    train_loss: JsonReal
    eval_loss: JsonReal
    best_step: int | None
    tokens_per_s: JsonReal
    parent: str | None
    pid: int | None
    heartbeat: JsonReal
    exit_code: int | None
    exit_signal: str | None
    error: str | None
    warning: str | None
    checkpoint: str | None
    host: str | None
    group: str | None  # run.json's group (a sweep's runs), or null


class Row(Summary):
    """A run's row (store.Run.row): the summary's fields (NaN and Inf still floats) and the TUI's."""

    parent_experiment: str | None
    changed: dict[str, list[Any]]
    notes: str  # the first line of notes.md
    executor: str  # local | slurm
    slurm: SlurmJob | None  # a Slurm run's job (state.json's `slurm`)


class EvalRow(TypedDict):
    """An eval's row (analysis.evalstore.eval_row): `labtui evals`, the TUI's eval lists, History."""

    id: str
    path: str
    run: str | None
    status: str
    error: str | None
    mode: str | None
    device: str | None
    checkpoint: str | None
    checkpoint_step: int | None
    split: str | None
    purpose: str
    n: int | None
    done: int | None
    total: int | None
    accuracy: float | None
    ci: list[float] | None
    macro_f1: float | None
    created: float | None
    degenerate: bool
    warnings: list[str]
    partial: bool


# --- coercer tables from the annotations ------------------------------------------------------------

_PLAIN: dict[Any, Coercer] = {str: as_text, bool: as_flag, int: as_whole, list: as_list, dict: as_mapping}


def _coercer(tp: Any, where: str) -> Coercer:
    if typing.get_origin(tp) is Annotated:
        coerce = tp.__metadata__[0]
        if not callable(coerce):
            raise TypeError(f"{where}: Annotated[..., coercer] expected, got {tp!r}")
        return cast(Coercer, coerce)
    if typing.get_origin(tp) in (Union, types.UnionType):  # X | None: null stays null anyway
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return _coercer(args[0], where)
    if typing.is_typeddict(tp):
        return functools.partial(_nested, tp)
    if tp is float:
        raise TypeError(f"{where}: say Finite (a time, a step) or Real (NaN and Inf kept) instead of float")
    base = typing.get_origin(tp) or tp
    if base in _PLAIN:
        return _PLAIN[base]
    raise TypeError(f"{where}: no coercer for {tp!r}; annotate it Annotated[type, coercer]")


def _nested(td: type, x: Any) -> dict | None:
    return clean(x, fields_of(td)) if isinstance(x, dict) else None


@functools.cache
def fields_of(td: type) -> dict[str, Coercer]:
    """{key: coercer} of a TypedDict of this module, from its annotations (what `clean` takes)."""
    hints = typing.get_type_hints(td, include_extras=True)
    return {key: _coercer(tp, f"{td.__name__}.{key}") for key, tp in hints.items()}


def run_info(obj: Any) -> RunInfo:
    """A parsed run.json as a RunInfo (see `clean`); {} when it is not an object."""
    return cast(RunInfo, clean(obj, RUN_FIELDS))


def state(obj: Any) -> State:
    return cast(State, clean(obj, STATE_FIELDS))


def progress(obj: Any) -> Progress:
    return cast(Progress, clean(obj, PROGRESS_FIELDS))


def env_info(obj: Any) -> EnvInfo:
    return cast(EnvInfo, clean(obj, ENV_FIELDS))


def eval_settings(obj: Any) -> EvalSettings:
    return cast(EvalSettings, clean(obj, EVAL_SETTINGS_FIELDS))


def eval_summary(obj: Any) -> EvalSummary:
    return cast(EvalSummary, clean(obj, EVAL_SUMMARY_FIELDS))


def notified(obj: Any) -> dict[str, Notified]:
    """A parsed notified.json: {event key: Notified}; an entry that is not an object is left out."""
    if not isinstance(obj, dict):
        return {}
    return {str(k): cast(Notified, clean(v, NOTIFIED_FIELDS)) for k, v in obj.items() if isinstance(v, dict)}


RUN_FIELDS = fields_of(RunInfo)
STATE_FIELDS = fields_of(State)
PROGRESS_FIELDS = fields_of(Progress)
ENV_FIELDS = fields_of(EnvInfo)
EVAL_SETTINGS_FIELDS = fields_of(EvalSettings)
EVAL_SUMMARY_FIELDS = fields_of(EvalSummary)
NOTIFIED_FIELDS = fields_of(Notified)
SUMMARY_FIELDS: tuple[str, ...] = tuple(Summary.__annotations__)
