"""`e`: evaluate the selected run. Checkpoint, N, mode, temperatures and a CPU/GPU toggle (`d`);
starts `labtui eval` in a subprocess, shows the eval's progress live, offers the CPU re-run when a
GPU eval comes back degenerate, and runs the CPU/GPU parity check (`p`)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from labtui.engine.config.experiment import CHOICES
from labtui.engine.rundir import store
from labtui.engine.rundir.fmt import printable
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.reactive import reactive
from textual.screen import Screen
from textual.widgets import DataTable, Input, Label, ProgressBar, Select, Static
from textual.worker import get_current_worker

from .. import cli_runner, evals, messages
from .. import format as fmt
from ..widgets.footer import LabFooter
from ..widgets.number_input import NumberInput

DEVICES = {"cpu": "CPU", "cuda": "GPU (cuda)"}  # the two `d` switches between (eval.device's auto is the CLI's)
MODES = CHOICES["eval.mode"]  # the experiment schema's, as `labtui eval --mode` checks them
POLL_S = 0.5


def default_device(run: store.Run) -> str:
    """GPU when the run trained on one (its env.json), else CPU."""
    env = run.env()
    return "cuda" if env.get("cuda_available") or str(env.get("device", "")).startswith("cuda") else "cpu"


@dataclass(frozen=True)
class EvalDefaults:
    """The form's starting values, from the run directory (and NVML), read in a worker thread."""

    device: str  # "cuda" only when the run trained on a GPU and this machine has one
    mode: str
    n: int | None  # the config's eval.n (None: all)
    temperatures: tuple[float, ...]
    best_step: int | None
    complete: tuple[str, ...]  # the steps of the checkpoints that can be evaluated, newest first
    incomplete: int  # half-written checkpoints (not offered)
    gpu: tuple[bool, str]  # evals.gpu_here()


def read_defaults(run: store.Run, gpu: tuple[bool, str]) -> EvalDefaults:
    ecfg = run.config().get("eval") or {}
    checkpoints = run.checkpoints()
    complete = [p for p in checkpoints if store.checkpoint_problem(p) is None]  # a half-written one cannot be evaluated
    temps = ecfg.get("temperatures") or [0.0]
    return EvalDefaults(
        device="cuda" if default_device(run) == "cuda" and gpu[0] else "cpu",  # trained on a GPU elsewhere; none here
        mode=ecfg.get("mode") if ecfg.get("mode") in MODES else "score",
        n=ecfg.get("n") or None, temperatures=tuple(temps) if isinstance(temps, (list, tuple)) else (0.0,),
        best_step=run.progress().get("best_step"),
        complete=tuple(p.name.split("-")[1] for p in reversed(complete)), incomplete=len(checkpoints) - len(complete),
        gpu=gpu)


class EvalScreen(Screen):
    HELP_TITLE = "Evaluate"
    BINDINGS = [
        Binding("ctrl+s", "start", "Start eval", id="start-eval", priority=True),
        Binding("d", "toggle_device", "CPU/GPU", id="device"),
        Binding("m", "toggle_mode", "Mode", id="mode"),
        Binding("p", "parity", "Parity", id="parity", tooltip="Same examples on CPU and GPU"),
        Binding("u", "cpu_rerun", "Re-run on CPU", id="cpu-rerun", tooltip="The last GPU eval came back degenerate"),
        Binding("escape", "app.pop_screen", "Back", id="back"),
    ]

    # start and parity wait while an eval runs; u needs a degenerate GPU eval to repeat on the CPU
    # (bindings=True: the footer follows them)
    busy: reactive[bool] = reactive(False, bindings=True)
    degenerate_gpu: reactive[dict | None] = reactive(None, bindings=True)  # the settings to repeat on the CPU

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.device = "cpu"
        self.mode = "score"
        self.eval_dir: Path | None = None
        self.last_argv: list[str] | None = None
        self.last_result: cli_runner.CliResult | None = None
        self.defaults: EvalDefaults | None = None  # None until read (load_defaults)
        self._switched: set[str] = set()  # "device", "mode": switched by the user, kept when the defaults come in
        self._gpu: tuple[bool, str] | None = None

    @property
    def run(self) -> store.Run:
        return self.app.run_for(self.run_id)

    def compose(self) -> ComposeResult:
        yield Static(id="eval-title", classes="screen-title")
        with Vertical(id="eval-form"):
            with Horizontal(classes="form-row"):
                yield Label("checkpoint", classes="form-label")
                yield Select([("latest", "latest")], value="latest", allow_blank=False, id="checkpoint")
            with Horizontal(classes="form-row"):
                yield Label("examples N", classes="form-label")
                yield NumberInput(id="n", classes="short")
                yield Label("temperatures", classes="form-label")
                yield NumberInput(allowed="0123456789., ", value="0", id="temps", classes="short")
            yield Static(id="toggles")
            yield Static(id="eval-command", classes="hint")
        yield Static(id="eval-status")
        yield ProgressBar(id="eval-progress", show_eta=False)
        yield DataTable(id="eval-list", cursor_type="row")
        yield LabFooter()

    def on_mount(self) -> None:
        self._title("…")
        table = self.query_one("#eval-list", DataTable)
        table.border_title = "Evaluations of this run"
        for label in ("eval", "status", "device", "mode", "step", "n", "accuracy [95% CI]", "notes"):
            table.add_column(label)
        self.query_one("#eval-progress").display = False
        self._refresh_form()
        self.load_defaults()
        self.load_evals()
        self.query_one("#n", Input).focus()

    def _title(self, checkpoints: str) -> None:
        row = self.app.row(self.run_id)
        self.query_one("#eval-title", Static).update(Content.from_markup(
            "[b]Evaluate[/b] $run · $status · $n checkpoint(s)", run=printable(self.run_id),
            status=printable(row.status if row else "?"), n=checkpoints))

    @work(thread=True, group="eval-defaults", exclusive=True, exit_on_error=False, description="read the eval form's defaults")
    def load_defaults(self) -> None:
        try:
            defaults = read_defaults(self.run, self.gpu())
        except Exception as e:  # noqa: BLE001 - logged; the form keeps its plain defaults
            self.app.call_from_thread(self.app.report_error, "evaluate defaults", e)
            return
        self.app.call_from_thread(self._defaults_loaded, defaults)

    def _defaults_loaded(self, d: EvalDefaults) -> None:
        """The run's defaults, where the form still has its own: what was already typed or switched stays."""
        self.defaults = d
        if "device" not in self._switched:
            self.device = d.device
        if "mode" not in self._switched:
            self.mode = d.mode
        self.query_one("#n", Input).placeholder = str(d.n or "all")
        temps = self.query_one("#temps", Input)
        if temps.value == "0":
            temps.value = ", ".join(f"{t:g}" for t in d.temperatures)
        options = [("latest", "latest")]
        if d.best_step is not None:
            options.append((f"best (step {d.best_step})", "best"))
        options += [(f"step {step}", step) for step in d.complete]
        select = self.query_one("#checkpoint", Select)
        chosen = select.value
        select.set_options(options)
        select.value = chosen if any(value == chosen for _, value in options) else "latest"
        self._title(str(len(d.complete)) + (f" (+{d.incomplete} incomplete)" if d.incomplete else ""))
        self._refresh_form()

    # --- the form -----------------------------------------------------------------------------

    def settings(self) -> dict:
        n_text = self.query_one("#n", Input).value.strip()
        temps = []
        for part in self.query_one("#temps", Input).value.replace(",", " ").split():
            try:
                temps.append(float(part))
            except ValueError:
                pass
        return {"device": self.device, "mode": self.mode, "n": int(n_text) if n_text else None,
                "checkpoint": str(self.query_one("#checkpoint", Select).value or "latest"),
                "temperatures": temps or [0.0]}

    def argv(self, **override) -> list[str]:
        s = {**self.settings(), **override}
        return cli_runner.eval_argv(self.app.workspace.root, self.run_id, device=s["device"], mode=s["mode"],
                                    n=s["n"], checkpoint=s["checkpoint"], temperatures=s["temperatures"])

    def _refresh_form(self) -> None:
        def choice(options, current, key):
            shown = "  ".join(f"[reverse b] {label} [/]" if value == current else f" {label} "
                              for value, label in options)
            return f"{shown}  [$text-muted]([b $accent]{key}[/] switches)[/]"

        self.query_one("#toggles", Static).update(
            f"device  {choice(DEVICES.items(), self.device, 'd')}\n"
            f"mode    {choice(((m, m) for m in MODES), self.mode, 'm')}")
        self.query_one("#temps", Input).disabled = self.mode != "generate"
        self.query_one("#eval-command", Static).update(Content(printable(cli_runner.display(self.argv()))))

    @on(Input.Changed)
    @on(Select.Changed)
    def _edited(self) -> None:
        self._refresh_form()

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action in ("start", "parity"):
            return (not self.busy) or None
        if action == "cpu_rerun":
            return (self.degenerate_gpu is not None and not self.busy) or False
        return True

    def action_toggle_device(self) -> None:
        if self.device == "cpu":
            ok, why = self.gpu()
            if not ok:  # refused now: the eval would fail 20 s later and stay behind as a failed eval
                self.notify(f"GPU: {why}; evaluations here run on the CPU", title="CPU only", severity="warning")
                self._status("[$warning]GPU refused: $why[/]", why=why)
                return
        self.device = "cpu" if self.device == "cuda" else "cuda"
        self._switched.add("device")
        self._refresh_form()

    def gpu(self) -> tuple[bool, str]:
        """(a GPU here?, its name or why not), from NVML without torch; asked once per screen (first
        by load_defaults, in its thread)."""
        if self._gpu is None:
            self._gpu = evals.gpu_here()
        return self._gpu

    def action_toggle_mode(self) -> None:
        self.mode = MODES[(MODES.index(self.mode) + 1) % len(MODES)]
        self._switched.add("mode")
        self._refresh_form()

    def _status(self, markup: str, **values) -> None:
        """Our markup; run data only as $variables (Content escapes them), control characters removed."""
        self.query_one("#eval-status", Static).update(
            Content.from_markup(markup, **{k: printable(v) for k, v in values.items()}))

    # --- starting and following ---------------------------------------------------------------

    def action_start(self) -> None:
        if self.device == "cuda" and not self.gpu()[0]:
            self._status("[$warning]GPU refused: $why[/]", why=self.gpu()[1])
            return
        if not self.busy:
            self.start(self.argv())

    def action_cpu_rerun(self) -> None:
        if self.degenerate_gpu is not None and not self.busy:
            self.device = "cpu"
            self._switched.add("device")
            self._refresh_form()
            self.start(self.argv(**self.degenerate_gpu, device="cpu"))

    def start(self, argv: list[str]) -> None:
        self.busy = True
        self.degenerate_gpu = None
        self.last_argv = argv
        self._status("[$accent]starting: $command[/]", command=cli_runner.display(argv))
        self.launch(argv)

    @work(thread=True, group="eval-launch", exclusive=True, exit_on_error=False, description="labtui eval (subprocess)")
    def launch(self, argv: list[str]) -> None:
        result = cli_runner.run_cli(argv, cwd=self.app.workspace.root)
        self.app.call_from_thread(self._launched, result)

    def _launched(self, result: cli_runner.CliResult) -> None:
        self.last_result = result
        if not result.ok or not result.ids:
            self.busy = False
            self._status("[$error]eval did not start: $why[/]", why=result.message or "no eval id printed")
            return
        self.eval_dir = self.run.file(store.EVALS_DIR) / result.ids[0]
        self._status("eval $id started", id=result.ids[0])
        bar = self.query_one("#eval-progress", ProgressBar)
        bar.display = True
        bar.update(total=None, progress=0)
        self.follow(self.eval_dir)

    @work(thread=True, group="eval-follow", exclusive=True, exit_on_error=False, description="eval progress")
    def follow(self, eval_dir: Path) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            row = evals.eval_row(eval_dir)
            self.post_message(messages.EvalProgress(str(eval_dir), row))
            if row.get("status") in store.FINAL:
                return
            time.sleep(POLL_S)

    def on_eval_progress(self, message: messages.EvalProgress) -> None:
        row = message.progress
        bar = self.query_one("#eval-progress", ProgressBar)
        if row.get("total"):
            bar.update(total=row["total"], progress=row.get("done") or 0)
        status = row.get("status")
        name = Path(message.eval_dir).name
        if status not in store.FINAL:
            self._status("eval $name: $status · $done/$total on $device", name=name, status=status,
                         done=row.get("done") or 0, total=row.get("total") or "?", device=row.get("device") or self.device)
            return
        self.busy = False
        bar.display = False
        if status == "completed":
            text = "[b]eval $name: accuracy $acc[/b] ($evaluated)"
            values = dict(name=name, acc=fmt.accuracy_ci(row.get("accuracy"), row.get("ci")),
                          evaluated=evals.settings_text(row))
            if row.get("degenerate"):
                text += "\n[$error]degenerate: $degenerate[/]"
                values["degenerate"] = "; ".join(str(w) for w in row.get("warnings") or [])
                if str(row.get("device") or "").startswith("cuda"):
                    self.degenerate_gpu = {k: v for k, v in self.settings().items() if k != "device"}
                    text += "\n[$warning]a GPU eval came back degenerate: press [b]u[/b] to re-run it on the CPU[/]"
        else:
            text = "[$error]eval $name $status: $message[/]"
            values = dict(name=name, status=status, message=row.get("error") or "")
        self._status(text, **values)
        self.load_evals()

    # --- parity and the list ------------------------------------------------------------------

    def action_parity(self) -> None:
        if self.busy:
            return
        self.busy = True
        self._status("[$accent]parity: the same examples on CPU and GPU (this can take a while)…[/]")
        self.parity(cli_runner.parity_argv(self.app.workspace.root, self.run_id))

    @work(thread=True, group="eval-launch", exclusive=True, exit_on_error=False, description="labtui parity (subprocess)")
    def parity(self, argv: list[str]) -> None:
        result = cli_runner.run_cli(argv, cwd=self.app.workspace.root, timeout=3600)
        self.app.call_from_thread(self._parity_done, result)

    def _parity_done(self, result: cli_runner.CliResult) -> None:
        self.busy = False
        self.last_result = result
        text = result.stdout.strip() or result.message
        style = "" if result.ok else "$error"
        self._status(f"[{style}]$text[/]" if style else "$text", text=text)
        self.load_evals()

    @work(thread=True, group="eval-list", exclusive=True, exit_on_error=False, description="list evals")
    def load_evals(self) -> None:
        try:
            rows = evals.list_evals(self.run)
        except Exception as e:  # noqa: BLE001 - shown to the user
            rows = []
            self.app.call_from_thread(self._status, "[$error]$message[/]", message=str(e))
        self.app.call_from_thread(self._show_evals, rows)

    def _show_evals(self, rows: list[dict]) -> None:
        table = self.query_one("#eval-list", DataTable)
        table.clear()
        for r in reversed(rows):
            notes = []
            if r.get("purpose") == "parity":
                notes.append("parity")
            if r.get("degenerate"):
                notes.append("DEGENERATE")
            if r.get("partial"):
                notes.append("partial")
            if r.get("split") not in (None, "test"):
                notes.append(f"split {r['split']}")
            rid = str(r["id"])
            cells = (rid[9:] if len(rid) > 9 else rid, r.get("status") or "-", r.get("device") or "-",
                     r.get("mode") or "-", r.get(store.CHECKPOINT_STEP) if r.get(store.CHECKPOINT_STEP) is not None else "-",
                     r.get("n") or "-", fmt.accuracy_ci(r.get("accuracy"), r.get("ci")), " ".join(notes))
            table.add_row(*(Text(printable(c)) for c in cells), key=rid)
