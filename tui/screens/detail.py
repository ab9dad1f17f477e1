"""`enter`: one run in full. The resolved config with the changes against its parent highlighted,
the environment, checkpoints and evaluations, the lifecycle actions, and the user's notes
(notes.md in the run directory, shown in History)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from labtui.engine.rundir import ranks as ranks_mod
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static, TextArea
from textual.worker import get_current_worker

from .. import engine_api, evals, slurm_view
from .. import format as fmt
from ..commands import HonestKeys
from ..config_view import config_content, diff_content
from ..guard import guarded
from ..text import join_lines, markup, plain
from ..widgets.footer import LabFooter
from ..widgets.run_panels import rank_lines
from . import run_actions
from .run_actions import call_engine, why_disabled

ENV_KEYS = ("host", "python", "platform", "torch", "transformers", "peft", "trl", "datasets", "accelerate", "cuda",
            "cuda_available", "device", "device_name", "device_count", "torch_threads", "git_commit")


@dataclass(frozen=True)
class RunFiles:
    """What this screen shows from the run directory, read in a worker thread (never on the UI
    thread: the run list changes every poll while the run trains)."""

    info: dict
    status: str  # state.json's, for a run the run list does not have (yet)
    config: dict
    env: dict
    checkpoints: tuple[tuple[str, float], ...]  # (name, mtime) of every checkpoint, oldest first
    launch: dict = field(default_factory=dict)  # ranks.launch_info: launcher, nproc, accelerate_config, command
    ranks: tuple[dict, ...] = ()  # a multi-process run's heartbeats (ranks.read_ranks)
    error_where: str | None = None  # where it failed: `file:line in f`, or a rank's root-cause traceback


def read_files(run) -> RunFiles:
    state = run.state()
    config = run.config()
    where = state.get("error_where")
    return RunFiles(info=run.info(), status=state.get("status", "?"), config=config, env=run.env(),
                    checkpoints=tuple((p.name, p.stat().st_mtime) for p in run.checkpoints()),
                    launch=ranks_mod.launch_info(state, config), ranks=tuple(ranks_mod.read_ranks(run.path)),
                    error_where=where if isinstance(where, str) else None)


class RunDetailScreen(HonestKeys, Screen):
    HELP_TITLE = "Run detail"
    BINDINGS = [
        Binding("ctrl+s", "save_notes", "Save notes", id="save-notes", priority=True),
        Binding("s", "stop", "Stop", id="stop"),
        Binding("r", "resume", "Resume", id="resume"),
        Binding("R", "retry", "Retry", id="retry", tooltip="Start a new run with the same config"),
        Binding("e", "evaluate", "Evaluate", id="evaluate"),
        Binding("l", "log", "Log", id="log"),
        Binding("n", "notes", "Notes", id="notes", tooltip="Write notes: what it tested, what it showed"),
        Binding("escape", "back", "Back", id="back"),
    ]

    def __init__(self, run_id: str):
        super().__init__()
        self.run_id = run_id
        self.saved_notes = ""  # notes.md as read or last saved
        self.notes_loaded = False  # notes.md read (load_notes)
        self.files: RunFiles | None = None  # None until the first read is in
        self._files_for: object = ()  # the run-list row the files were last read for

    @property
    def run(self):
        return self.app.run_for(self.run_id)

    def compose(self) -> ComposeResult:
        yield Static(id="detail-title", classes="screen-title")
        with Horizontal(id="detail-body"):
            with VerticalScroll(id="detail-left"):
                yield Static(id="detail-info")
            with Vertical(id="detail-right"):
                yield TextArea(id="notes", soft_wrap=True, show_line_numbers=False)
                yield Static(id="notes-state", classes="hint")
        yield LabFooter()

    def on_mount(self) -> None:
        self.query_one("#notes", TextArea).border_title = "Notes (n to write, ctrl+s to save)"
        self.load_notes()
        self.watch(self.app, "runs", self._runs_changed, init=True)
        self.load_evals()
        self.query_one("#detail-left").focus()

    def _runs_changed(self, *_) -> None:
        """Draw the run list's numbers now; read the run's files again (in a thread) when its row
        changed (a new step, a checkpoint, a status): the drawing itself reads no file."""
        row = self.app.row(self.run_id)
        if row != self._files_for:
            self._files_for = row
            self.load_files()
        self._draw()

    @work(thread=True, group="detail-files", exclusive=True, exit_on_error=False, description="read the run's files")
    def load_files(self) -> None:
        worker = get_current_worker()
        try:
            files = read_files(self.run)
        except Exception as e:  # noqa: BLE001  shown where the files go, logged, the screen goes on
            self.app.call_from_thread(self.app.report_error, "run detail files", e)
            return
        if not worker.is_cancelled:  # a newer read is under way
            self.app.call_from_thread(self._files_loaded, files)

    def _files_loaded(self, files: RunFiles) -> None:
        self.files = files
        self._draw()

    @guarded("run detail")
    def _draw(self, *_) -> None:
        run = self.run
        row = self.app.row(self.run_id)
        files = self.files
        info = files.info if files else {}
        status = row.status if row else files.status if files else "?"
        icon = fmt.STATUS_ICONS.get(status, "?")
        style = fmt.STATUS_STYLES.get(status, "")
        self.query_one("#detail-title", Static).update(
            markup("[b]Run[/b] $id · [" + (style or "$text") + "]$icon $status[/]", id=self.run_id, icon=icon,
                   status=status))
        lines: list[Content | str] = []
        if row and row.error:
            lines.append(plain(f"error: {row.error}", "$error"))
        lines += _traceback_lines(files)
        lines += [plain(x, "$accent" if i == 0 else "$text-muted") for i, x in enumerate(slurm_view.detail_lines(row, run.path))]
        if info.get("description"):
            lines.append(markup("[b]hypothesis[/b] $text", text=info["description"]))
        if row:
            dur = fmt.duration(row.duration(self.app.now()))
            lines.append(plain(f"step {row.step}/{row.max_steps or '?'} · train loss {fmt.num(row.train_loss)} · best "
                               f"eval loss {fmt.num(row.eval_loss)}"
                               + (f" (step {row.best_step})" if row.best_step is not None else "")
                               + f" · duration {dur}"))
        lines += self._rank_lines(files)
        if info.get("experiment_file"):
            lines.append(markup("[b]experiment[/b] $path", path=info["experiment_file"]))
        parent = info.get("parent") or info.get("parent_experiment")
        changed = info.get("changed") if isinstance(info.get("changed"), dict) else {}
        if parent:
            lines.append(markup("[b]parent[/b] $parent", parent=parent))
        if changed:
            lines.append("[b]changed vs parent[/b]")
            lines += [Content("  ") + x for x in diff_content(changed)]
        if isinstance(info.get("overrides"), dict) and info["overrides"]:
            lines.append(markup("[b]overrides[/b] $keys", keys=", ".join(_flat_keys(info["overrides"]))))
        lines += ["", "[b]resolved config[/b] [$text-muted](changed keys highlighted)[/]"]
        if files is None:
            lines.append("  loading…")
        else:
            cfg = {k: v for k, v in files.config.items() if k not in ("description", "name")}
            lines += [Content("  ") + x for x in config_content(cfg, {k: "$warning" for k in changed})]
            env = files.env
            if env:
                lines += ["", "[b]environment[/b]"]
                lines += [plain(f"  {k}: {env[k]}") for k in ENV_KEYS if env.get(k) is not None]
            cps = files.checkpoints
            lines += ["", f"[b]checkpoints[/b] ({len(cps)})"]
            lines += [markup("  $name  [$text-muted]$when[/]", name=name,
                             when=time.strftime("%m-%d %H:%M", time.localtime(mtime)))
                      for name, mtime in cps[-8:]] or ["  none yet"]
        lines += ["", "[b]evaluations[/b]"] + (getattr(self, "_eval_lines", None) or ["  loading…"])
        lines += ["", plain(str(run.path), "$text-muted")]
        self.query_one("#detail-info", Static).update(join_lines(lines))

    def _rank_lines(self, files: RunFiles | None) -> list[Content | str]:
        """A multi-process run: how it was launched, then every rank (the dashboard's GPU panel's
        lines, with the GPU samples of the selected run's snapshot when this is that run)."""
        if files is None or (len(files.ranks) < 2 and files.launch.get("launcher", "python") == "python"):
            return []
        lines: list[Content | str] = [markup("[b]launch[/b] $how", how=ranks_mod.launch_text(files.launch))]
        if not files.ranks:
            return lines + [plain("  no rank heartbeat yet", "$text-muted")]
        snap = self.app.snapshot
        system = snap.last_system if snap is not None and snap.run_id == self.run_id else None
        width = self.query_one("#detail-info", Static).content_size.width or 40
        lines += [Content("  ") + x for x in rank_lines(files.ranks, system, self.app.now(), max(34, width - 2))]
        return lines

    @work(thread=True, group="detail-evals", exclusive=True, exit_on_error=False, description="list evals")
    def load_evals(self) -> None:
        try:
            rows = evals.list_evals(self.run)
            lines = [markup("  $id $status $evaluated: $acc" + (" [$error]degenerate[/]" if r.get("degenerate") else "")
                            + (" (parity)" if r.get("purpose") == "parity" else ""),
                            id=r.get("id"), status=r.get("status"), evaluated=evals.settings_text(r),
                            acc=fmt.accuracy_ci(r.get("accuracy"), r.get("ci")))
                     for r in rows] or ["  none yet (e evaluates)"]
        except Exception as e:  # noqa: BLE001
            lines = [plain(f"  {e}", "$warning")]
        self._eval_lines = lines
        self.app.call_from_thread(self._draw)

    # --- notes --------------------------------------------------------------------------------

    @work(thread=True, group="detail-notes", exclusive=True, exit_on_error=False, description="read notes.md")
    def load_notes(self) -> None:
        try:
            text = self.run.notes()
        except Exception as e:  # noqa: BLE001  logged; the notes stay empty and unsaved
            self.app.call_from_thread(self.app.report_error, "run notes", e)
            return
        self.app.call_from_thread(self._notes_loaded, text)

    def _notes_loaded(self, text: str) -> None:
        """notes.md into the editor; anything typed before it came in is kept, after it."""
        if self.notes_loaded:
            return
        self.notes_loaded = True
        self.saved_notes = text
        notes = self.query_one("#notes", TextArea)
        typed = notes.text
        notes.text = text if not typed else (text.rstrip("\n") + "\n" + typed if text.strip() else typed)
        self.on_text_area_changed()

    def on_text_area_changed(self) -> None:
        dirty = self.query_one("#notes", TextArea).text != self.saved_notes
        self.query_one("#notes-state", Static).update("unsaved (ctrl+s)" if dirty else "")

    def action_notes(self) -> None:
        self.query_one("#notes", TextArea).focus()

    def action_save_notes(self) -> None:
        if not self.notes_loaded:  # saved before notes.md was read (a slow disk): read it now, keep both
            self._notes_loaded(self.run.notes())
        text = self.query_one("#notes", TextArea).text
        self.run.write_notes(text)
        self.saved_notes = text
        self.on_text_area_changed()
        self.notify("notes saved")
        self.app.refresh_now()

    def action_back(self) -> None:
        notes = self.query_one("#notes", TextArea)
        if notes.has_focus:
            self.query_one("#detail-left").focus()
            return
        if notes.text != self.saved_notes:
            self.action_save_notes()
        self.app.pop_screen()

    # --- actions ------------------------------------------------------------------------------

    def why_disabled(self, action: str, parameters: tuple) -> str | None:
        if action not in ("stop", "resume", "retry"):
            return None
        return why_disabled(action, self.app.row(self.run_id))

    def action_stop(self) -> None:
        from .confirm import Choose

        def chosen(how) -> None:
            if how is not None:
                self.engine_call(f"stop {self.run_id}", engine_api.stop, self.run, now=(how == "now"))

        self.app.push_screen(Choose(f"Stop {self.run_id}?", [("y", "stop after a checkpoint", "graceful"),
                                                               ("k", "kill now", "now")]), chosen)

    def action_resume(self) -> None:
        run_actions.resume(self, self.run)  # asks first when the concurrency limit is reached

    def action_retry(self) -> None:
        run_actions.retry(self, self.run)  # a command run's command is shown first

    @work(thread=True, group="engine-action", exclusive=True, exit_on_error=False, description="lifecycle action")
    def engine_call(self, what: str, fn, *args, **kwargs) -> None:
        call_engine(self.app, what, fn, *args, **kwargs)

    def action_evaluate(self) -> None:
        from .evaluate import EvalScreen

        self.app.push_screen(EvalScreen(self.run_id))

    def action_log(self) -> None:
        from .log import LogScreen

        self.app.push_screen(LogScreen(self.run_id))


def _traceback_lines(files: RunFiles | None) -> list[Content | str]:
    """A traceback as the run's `error_where` (a rank's root cause, from torchrun's error file), one
    line each, indented under the error; a one-line `file:line in f` is not repeated here."""
    where = (files.error_where or "").strip() if files else ""
    if "\n" not in where:
        return []
    return [plain("traceback (root cause)", "$error")] + [plain("  " + ln, "$text-muted") for ln in where.splitlines()]


def _flat_keys(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += _flat_keys(v, f"{prefix}{k}.")
        else:
            out.append(f"{prefix}{k}={v}")
    return out
