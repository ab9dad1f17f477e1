"""`n`: launch a run. Pick an experiment from experiments/, see its `extends` chain and what it
changes, override a few fields, read the resolved config, then start it now or queue it.

The preview uses engine.config.load_experiment (light: YAML only). Starting runs the CLI in a
subprocess (`labtui run FILE --set k=v ... [--queue]`): it validates against the training
libraries, which this process never imports, and prints the new run id or a one-line error.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from labtui.engine.config.experiment import ConfigError, Experiment, check_field, flatten, load_experiment, parse_value
from labtui.engine.rundir import store
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.markup import escape
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from .. import cli_runner
from ..config_view import _scalar, config_lines
from ..widgets.footer import LabFooter

# The fields most often changed between runs; anything else goes in "more". `executor`: slurm submits
# the run to Slurm (the experiment's slurm: section says how), local runs it here.
FIELDS = (
    ("training.max_steps", "max steps"),
    ("training.learning_rate", "learning rate"),
    ("lora.r", "LoRA r"),
    ("training.per_device_train_batch_size", "batch"),
    ("launch.executor", "executor"),
)


def change_lines(changed: dict, parent: str, overridden: set[str]) -> list[Content]:
    """What differs from the parent, one `key: old → new` per line, so a narrow terminal wraps a
    long value instead of cutting the line before the new value; overrides say so."""
    if not changed:
        return []
    out = [Content.from_markup("[b]changes vs $parent[/b]", parent=parent)]
    for key, pair in changed.items():
        old, new = pair if isinstance(pair, (list, tuple)) and len(pair) == 2 else (None, pair)
        out.append(Content.from_markup("  [$warning]$key[/]: $old → [b]$new[/b]$how", key=key, old=_scalar(old),
                                       new=_scalar(new), how=" (--set)" if key in overridden else ""))
    out.append(Content(""))
    return out


SHIPPED_EXPERIMENTS = store.SHIPPED_EXPERIMENTS  # the repository's, as `labtui demo` uses


def experiment_files(ws_experiments: Path) -> list[Path]:
    folder = ws_experiments if ws_experiments.is_dir() else SHIPPED_EXPERIMENTS
    return sorted(p for p in folder.glob("*.y*ml") if p.suffix in (".yaml", ".yml"))


class LaunchScreen(Screen):
    HELP_TITLE = "Launch"
    BINDINGS = [
        Binding("ctrl+s", "start(False)", "Start now", id="start", priority=True),
        Binding("ctrl+t", "start(True)", "Add to queue", id="queue", priority=True),
        Binding("escape", "app.pop_screen", "Back", id="back"),
    ]

    # start and queue need a config that resolves, and no start under way (bindings=True: the
    # footer follows them)
    preview_ok: reactive[bool] = reactive(False, bindings=True)
    busy: reactive[bool] = reactive(False, bindings=True)

    def __init__(self) -> None:
        super().__init__()
        self.files: list[Path] = []
        self.last_argv: list[str] | None = None
        self.last_result: cli_runner.CliResult | None = None
        self._preview_version = 0  # the preview last asked for (a resolve that comes back later is dropped)
        self.executor = "local"  # the resolved config's launch.executor (slurm: Slurm queues it, no slot question)

    def compose(self) -> ComposeResult:
        yield Static(id="launch-title", classes="screen-title")
        with Horizontal(id="launch-body"):
            yield OptionList(id="experiments")
            with Vertical(id="launch-right"):
                yield Static(id="exp-info")
                with Horizontal(id="fields"):
                    for key, label in FIELDS:
                        with Vertical(classes="field"):
                            yield Label(label, id=f"l-{key.replace('.', '-')}")
                            yield Input(id=f"f-{key.replace('.', '-')}", classes="override")
                yield Static(id="field-error")  # the schema's word on a typed value, under the fields
                with Horizontal(id="more-row"):
                    yield Label("more --set", id="more-label")
                    yield Input(placeholder="key=value key=value (e.g. lora.lora_alpha=64)", id="more")
                with VerticalScroll(id="resolved-box"):
                    yield Static(id="resolved")
                yield Static(id="launch-status")
        yield LabFooter()

    def on_mount(self) -> None:
        options = self.query_one("#experiments", OptionList)
        options.border_title = "Experiment"
        self.query_one("#resolved-box").border_title = "Resolved config (changes highlighted)"
        self.query_one("#launch-title", Static).update(Content.from_markup("[b]New run[/b] · reading the experiments…"))
        self.load_files(self.app.workspace.experiments)
        options.focus()

    @work(thread=True, group="launch-files", exclusive=True, exit_on_error=False, description="list the experiment files")
    def load_files(self, folder: Path) -> None:
        try:
            files = experiment_files(folder)
        except OSError as e:  # shown as "no experiment files", logged
            self.app.call_from_thread(self.app.report_error, "launch: experiment files", e)
            files = []
        where = folder if folder.is_dir() else files[0].parent if files else folder
        self.app.call_from_thread(self._files_loaded, files, where)

    def _files_loaded(self, files: list[Path], where: Path) -> None:
        self.files = files
        self.query_one("#launch-title", Static).update(Content.from_markup("[b]New run[/b] · experiments in $where", where=str(where)))
        options = self.query_one("#experiments", OptionList)
        for p in files:
            options.add_option(Option(p.stem, id=str(p)))
        if files:
            options.highlighted = 0
            self.preview()
        else:
            self._status(Content.from_markup("[$error]no experiment files in $where: copy the shipped experiments/ "
                                             "folder there[/]", where=str(self.app.workspace.experiments)))

    # --- the form -----------------------------------------------------------------------------

    @property
    def experiment(self) -> Path | None:
        options = self.query_one("#experiments", OptionList)
        if options.highlighted is None or not self.files:
            return None
        return self.files[options.highlighted]

    def overrides(self) -> list[str]:
        """The `--set` items: the fields that were filled in, then the free-form ones."""
        items = []
        for key, _ in FIELDS:
            value = self.query_one(f"#f-{key.replace('.', '-')}", Input).value.strip()
            if value:
                items.append(f"{key}={value}")
        more = self.query_one("#more", Input).value.strip()
        if more:
            try:
                items.extend(shlex.split(more))
            except ValueError:
                items.extend(more.split())
        return items

    def argv(self, queue: bool) -> list[str]:
        root = self.app.workspace.root
        path = self.experiment
        if path is not None and path.is_relative_to(root):
            path = path.relative_to(root)  # the CLI runs in the workspace
        return cli_runner.run_argv(root, path, self.overrides(), queue=queue)

    @on(OptionList.OptionHighlighted, "#experiments")
    def _picked(self) -> None:
        self.preview()

    @on(Input.Changed, ".override, #more")
    def _edited(self) -> None:
        self.preview()

    def _input(self, key: str) -> Input:
        return self.query_one(f"#f-{key.replace('.', '-')}", Input)

    def field_errors(self) -> dict[str, str]:
        """{field key, or "more": the schema's error} for typed values it refuses: checked in this
        process as you type (engine.config.check_field, the CLI's own schema). The training
        libraries check the rest in the subprocess when the run starts."""
        errors: dict[str, str] = {}
        for key, _ in FIELDS:
            text = self._input(key).value.strip()
            error = check_field(key, parse_value(text)) if text else None
            if error:
                errors[key] = error
        more = self.query_one("#more", Input).value.strip()
        for item in (self.overrides()[len(self._filled()):] if more else []):
            key, sep, text = item.partition("=")
            error = check_field(key.strip(), parse_value(text.strip())) if sep and text.strip() else None
            if error and "more" not in errors:
                errors["more"] = error
        return errors

    def _filled(self) -> list[str]:
        return [key for key, _ in FIELDS if self._input(key).value.strip()]

    def _mark_fields(self, errors: dict[str, str]) -> None:
        for key, label in FIELDS:
            widget = self.query_one(f"#l-{key.replace('.', '-')}", Label)
            widget.update(Content.from_markup("[$error]✗ $label[/]", label=label) if key in errors else Content(label))
        more = self.query_one("#more-label", Label)
        more.update(Content.from_markup("[$error]more ✗[/]") if "more" in errors else Content("more --set"))

    def preview(self) -> None:
        """Check the typed values here (the schema alone, at once), then resolve the experiment file
        with its `extends` chain and the overrides in a worker (it reads files): `_resolved` draws it."""
        path = self.experiment
        if path is None:
            return
        errors = self.field_errors()
        self._mark_fields(errors)
        field_error = self.query_one("#field-error", Static)
        field_error.display = bool(errors)
        field_error.update(Content.from_markup("[$error]✗ $text[/]", text="; ".join(errors.values())) if errors else "")
        self._preview_version += 1
        if errors:
            self._show_error(next(iter(errors.values())) + (f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""))
            return
        self.resolve(self._preview_version, path, self.overrides())

    @work(thread=True, group="launch-preview", exclusive=True, exit_on_error=False, description="resolve the experiment")
    def resolve(self, version: int, path: Path, overrides: list[str]) -> None:
        try:
            result: Experiment | str = load_experiment(path, overrides)
        except (ConfigError, OSError) as e:  # an unreadable file says so where the preview goes
            result = str(e)
        self.app.call_from_thread(self._resolved, version, path, result)

    def _show_error(self, text: str) -> None:
        self.preview_ok = False
        self._status(Content.from_markup("[$error]✗ $error_text[/]", error_text=text))
        self.query_one("#resolved", Static).update("")

    def _resolved(self, version: int, path: Path, exp: Experiment | str) -> None:
        if version != self._preview_version:
            return  # the form changed since: a newer preview is on its way
        if isinstance(exp, str):
            self._show_error(exp)
            return
        self.preview_ok = True
        cfg = exp.config
        self.executor = str(flatten(cfg).get("launch.executor") or "local")
        for key, _ in FIELDS:
            value = flatten(cfg).get(key)
            self._input(key).placeholder = "-" if value is None else f"{value}"
        info = [Content.from_markup("[b]$name[/b]", name=path.name)]
        if len(exp.chain) > 1:
            info[0] = info[0] + Content.from_markup("  [$text-muted]extends: $chain[/]",
                                                    chain=" → ".join(p.name for p in exp.chain))
        if cfg.get("description"):
            info.append(Content.from_markup("[$text-muted]$text[/]", text=str(cfg["description"])))
        changed = exp.changed
        parent = (exp.parent_config or {}).get("name") or "the file"
        if changed:
            info.append(Content.from_markup("$n vs [b]$parent[/b]: listed first below", parent=str(parent),
                                            n=f"{len(changed)} change" + ("s" if len(changed) > 1 else "")))
        self.query_one("#exp-info", Static).update(Content("\n").join(info))
        marks = {k: "$warning" for k in changed}
        marks.update({k: "$accent" for k in flatten(exp.overrides)})
        shown = {k: v for k, v in cfg.items() if k not in ("description", "name")}
        lines = change_lines(changed, str(parent), set(flatten(exp.overrides)))
        lines += [Content.from_markup(line) for line in config_lines(shown, marks)]
        self.query_one("#resolved", Static).update(Content("\n").join(lines))
        cmd = cli_runner.display(self.argv(queue=False))
        self._status(Content.from_markup("[$text-muted]$cmd[/]  [b $accent]ctrl+s[/] start  [b $accent]ctrl+t[/] queue", cmd=cmd))

    def _status(self, text: str | Content) -> None:
        self.query_one("#launch-status", Static).update(text)

    # --- starting -----------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "start":
            return (self.preview_ok and not self.busy) or None
        return True

    def action_start(self, queue: bool, now: bool | None = None) -> None:
        if not self.preview_ok or self.busy or self.experiment is None:
            return
        if not queue and now is None and self.executor != "slurm":  # "start now" respects the concurrency
            # limit unless told to start anyway (a Slurm run is submitted: Slurm queues it)
            from . import run_actions

            run_actions.slot_question(self.app, f"Start {self.experiment.name}",
                                            lambda how: self.action_start(how == "queue", how == "now"))
            return
        self.busy = True
        argv = self.argv(queue) + (["--now"] if now else [])
        self.last_argv = argv
        self._status(f"[$accent]{'queueing' if queue else 'starting'} {escape(self.experiment.name)}: validating "
                     f"against the training libraries in a subprocess…[/]")
        self.launch(argv, queue)

    @work(thread=True, group="launch", exclusive=True, exit_on_error=False, description="labtui run (subprocess)")
    def launch(self, argv: list[str], queue: bool) -> None:
        result = cli_runner.run_cli(argv, cwd=self.app.workspace.root)
        self.app.call_from_thread(self._launched, result, queue)

    def _launched(self, result: cli_runner.CliResult, queue: bool) -> None:
        self.busy = False
        self.last_result = result
        if not result.ok:
            self._status(Content.from_markup("[$error]could not start: $message[/]", message=result.message))
            return
        ids = result.ids
        verb = "queued" if queue else "started"
        self.app.notify(", ".join(ids) or "done", title=f"Run {verb}")
        self.app.refresh_now()
        if ids:
            self.app.select_run(ids[0])
        self.app.pop_screen()
