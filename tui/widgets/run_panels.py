"""The dashboard's text panels for the selected run: throughput, GPU, system, status.

Each panel is a Static that `show()`s a `TailSnapshot` (and the run's row); the text is built by
a plain function so it can be read and tested without an app. Text is Textual `Content` built from
labtui's own markup with run data filled in as plain text (tui/text.py): a `[/]` or an escape
sequence in a run's files is shown, never parsed. Styles are theme variables, so the panels read
the same with 16 colours. A panel whose text cannot be built shows why and the app goes on.
"""

from __future__ import annotations

import time

from labtui.engine.rundir import alerts as alerts_mod
from labtui.engine.rundir import ranks as ranks_mod
from labtui.engine.rundir import store
from textual.content import Content
from textual.widgets import Static

from .. import format as fmt
from .. import slurm_view
from ..monitor import EvalInfo
from ..scan import RunRow
from ..tail import TailSnapshot, eta_seconds
from ..text import join_lines, markup, plain
from .loss_chart import PALETTE, short_label

MUTED = "$text-muted"


def clock_time(t: float) -> str:
    """`06:13` (local time)."""
    return time.strftime("%H:%M", time.localtime(t))


def eta_text(eta: float | None, now: float | None) -> str:
    """`ETA 1:02:03 (done ~06:13)`."""
    if eta is None:
        return ""
    done = f" (done ~{clock_time(now + eta)})" if now is not None and eta > 0 else ""
    return f"ETA {fmt.duration(eta)}{done}"


def time_line(elapsed: str, eta: float | None, now: float | None, width: int) -> Content:
    """`time   10:00 · ETA 23:20 (done ~06:13)`, shortened to `ETA 23:20 ~06:13` where that does not fit."""
    if eta is None:
        return plain(f"time   {elapsed}")
    full = eta_text(eta, now)
    short = f"ETA {fmt.duration(eta)}" + (f" ~{clock_time(now + eta)}" if now is not None and eta > 0 else "")
    for head, tail in ((f"time   {elapsed} · ", full), (f"time   {elapsed} · ", short), (f"time {elapsed} · ", short)):
        if len(head) + len(tail) <= width:
            break
    return Content.assemble(head, (tail, "b"))


def epoch_text(epoch) -> str:
    return f"{epoch:.2f}" if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) else "-"


def throughput_text(snap: TailSnapshot | None, row: RunRow | None, width: int, compact: bool = False,
                    now: float | None = None) -> Content:
    last = snap.last_train if snap else None
    if not last:
        total = (row.max_steps if row else None) or ((snap.start or {}).get("max_steps") if snap else None)
        head = "queued: nothing to show yet" if row and row.status == "queued" else "no training step logged yet"
        lines = [plain(head, MUTED)]
        if total:
            lines.append(markup("step   [b]0[/b]/$total", total=total))
        return join_lines(lines)
    step, total = last.get("step"), last.get("max_steps") or (row.max_steps if row else None)
    eta = eta_seconds(last, snap.start) if row is None or row.live else None
    lines = [
        markup("tok/s  [b]$now[/b] now · $avg avg", now=fmt.rate(last.get(store.TOKENS_PER_S)),
               avg=fmt.rate(last.get("tokens_per_s_avg"))),
        markup("samp/s $samples · step/s $steps", samples=fmt.rate(last.get("samples_per_s")),
               steps=fmt.rate(last.get("steps_per_s"))),
        markup("step   [b]$step[/b]/$total · epoch $epoch", step=step if step is not None else "?",
               total=total or "?", epoch=epoch_text(last.get("epoch"))),
        time_line(fmt.duration(last.get("elapsed")), eta, now, width),
    ]
    spark = "" if compact else fmt.sparkline(snap.tokens_per_s, max(4, width))
    if spark.strip():
        lines.append(plain(spark, "$accent"))
    return join_lines(lines)


def marked_throughput_text(marked, width: int) -> Content:
    """The marked runs' tokens/s side by side, one line each in its chart colour: `━ label  now  avg`.
    `marked`: (label, PALETTE slot, TailSnapshot or None while it loads) in the order marked."""
    name_w = max(6, width - 14)
    lines = [plain(f"{'tok/s':<{name_w + 2}}{'now':>6}{'avg':>6}", MUTED)]
    for label, slot, snap in marked:
        last = (snap.last_train if snap else None) or {}
        cells = (f"{'…' if snap is None else fmt.rate(last.get(store.TOKENS_PER_S)):>6}"
                 f"{fmt.rate(last.get('tokens_per_s_avg')) if snap else '':>6}")
        lines.append(Content.assemble(("━ ", PALETTE[slot % len(PALETTE)][2]),
                                      short_label(label, name_w).ljust(name_w), cells))
    return join_lines(lines)


RANK_BEAT_STYLES = {ranks_mod.STALE: "$warning", ranks_mod.GONE: "$error", "failed": "$error", "done": MUTED,
                    "stopping": "$accent"}


def rank_lines(recs, system: dict | None, now: float, width: int, max_lines: int | None = None) -> list[Content]:
    """A multi-process run, one line per rank: rank, finished step, heartbeat age (or `done`, `gone`,
    `fail`), the utilisation of its GPU (system.jsonl's sample of that device index), torch memory
    allocated/peak and, when wide enough, NVML's used/total of that GPU; the straggler marked `◀`,
    then the skew or `rank 1 slow: 3 steps behind`. At most `max_lines` lines: the ranks that do not
    fit are counted (`+5 more`), the straggler is always among those shown."""
    recs = ranks_mod.at(list(recs), now)
    gpus = {g.get("index"): g for g in (system or {}).get("gpus") or [] if isinstance(g, dict)}
    slow = ranks_mod.straggler(recs)
    skew = ranks_mod.step_skew(recs)
    nvml = width >= 41
    shown = recs
    if max_lines is not None and len(recs) + 2 > max_lines:
        keep = max(1, max_lines - 3)
        shown = recs[:keep]
        if slow is not None and all(r["rank"] != slow.rank for r in shown):
            shown = shown[:-1] + [r for r in recs if r["rank"] == slow.rank]
    lines = [plain("rank  step beat util mem/peak" + ("    nvml" if nvml else ""), MUTED)]
    for r in shown:
        status = r.get("status")
        if status in ("running", ranks_mod.STALE, "stopping"):
            beat = fmt.age(r.get("time"), now) if r.get("time") is not None else "?"
        else:
            beat = {"failed": "fail"}.get(status, status or "?")
        g = gpus.get(ranks_mod.device_index(r.get("device")))
        util = fmt.pct(g.get("util")) if g else "-"
        alloc, peak = r.get("mem_allocated"), r.get("mem_peak")
        mem = "-" if alloc is None and peak is None else f"{fmt.size(alloc)}/{fmt.size(peak)}"
        step = r.get("step")
        parts: list = [f"{r['rank']:>4} {step if step is not None else '-':>5} ",
                       (f"{beat:>4}", RANK_BEAT_STYLES.get(status, "")), f" {util:>4} {mem:<11}"]
        if nvml:
            used, total = (g or {}).get("mem_used"), (g or {}).get("mem_total")
            parts.append(f" {used / 2**30:.0f}/{total / 2**30:.0f}G" if used is not None and total else " -")
        if slow is not None and slow.rank == r["rank"]:
            parts.append((" ◀", "$warning"))
        lines.append(Content.assemble(*parts))
    if len(shown) < len(recs):
        lines.append(plain(f"+{len(recs) - len(shown)} more", MUTED))
    if slow is not None:
        lines.append(plain(slow.text(), "$warning"))
    else:
        lines.append(plain(f"{len(recs)} ranks" + (f" · step skew {skew}" if skew is not None else ""), MUTED))
    return lines


def gpu_text(snap: TailSnapshot | None, width: int, compact: bool = False, final: bool = False,
             now: float | None = None, max_lines: int | None = None) -> Content:
    """The selected run's GPUs (NVML, and its torch memory); for a multi-process run, its ranks
    (`rank_lines`) in at most `max_lines` lines."""
    if snap is not None and len(snap.ranks) > 1:
        return join_lines(rank_lines(snap.ranks, snap.last_system, time.time() if now is None else now, width,
                                     max_lines))
    system = snap.last_system if snap else None
    if not system:
        return plain("no machine samples yet", MUTED)
    gpus = system.get("gpus") or []
    at_end = markup(" [$text-muted](at end $t)[/]", t=clock_time(system["t"])) \
        if final and isinstance(system.get("t"), (int, float)) else Content("")
    if not gpus:
        head = Content.from_markup("[$warning]no NVIDIA GPU[/] [$text-muted](NVML not found)[/]")
        if compact:  # the System panel right below has the CPU and RAM
            return head
        ram = f"{fmt.gib(system.get('ram_used'))}/{fmt.gib(system.get('ram_total'))}G"
        return join_lines([head, markup("CPU $cpu of $n · RAM $ram", cpu=fmt.pct(system.get("cpu")),
                                        n=system.get("cpu_count") or "?", ram=ram) + at_end])
    torch_mem = {d.get("index"): d for d in ((snap.last_memory or {}).get("devices") or [])}
    bar_width = max(4, width - 18)
    lines = []
    for g in gpus:
        i = g.get("index", 0)
        power = f"{g['power']:.0f}/{g['power_limit']:.0f}W" if g.get("power") is not None and g.get("power_limit") else ""
        temp = f"{g['temp']}°C" if g.get("temp") is not None else ""
        head = f"GPU{i} {fmt.pct(g.get('util'))} {temp} {power}".rstrip()
        room = width - len(head) - 1
        name = fmt.clip(str(g.get("name") or "").replace("NVIDIA ", ""), room) if room >= 6 else ""
        lines.append(markup("[b]$head[/b] [$text-muted]$name[/]", head=head, name=name))
        used, total = g.get("mem_used"), g.get("mem_total")
        frac = used / total if used is not None and total else None
        style = "$error" if frac is not None and frac > 0.95 else "$warning" if frac is not None and frac > 0.85 else "$success"
        lines.append(Content.assemble("NVML ", (fmt.bar(frac, bar_width), style),
                                      f" {fmt.gib(used)}/{fmt.gib(total)}G"))
        t = torch_mem.get(i)
        if t:
            a, r, p = fmt.gib(t.get("allocated")), fmt.gib(t.get("reserved")), fmt.gib(t.get("peak"))
            if width >= 48:
                lines.append(markup("[$text-muted]torch (this run)[/] alloc $a resv $r peak ${p}G", a=a, r=r, p=p))
            else:
                lines.append(markup("[$text-muted]run torch a/r/p[/] $a/$r/${p}G", a=a, r=r, p=p))
        mem = fmt.sparkline(snap.gpu_mem.get(i, ()), max(4, width // 2 - 5), lo=0.0, hi=1.0)
        util = fmt.sparkline(snap.gpu_util.get(i, ()), max(4, width // 2 - 6), lo=0.0, hi=100.0)
        if (mem.strip() or util.strip()) and not compact:
            lines.append(markup("mem [$accent]$mem[/] util [$accent]$util[/]", mem=mem, util=util))
    if final and lines:
        lines[0] = lines[0] + at_end
    return join_lines(lines)


def system_text(snap: TailSnapshot | None, width: int, compact: bool = False, final: bool = False) -> Content:
    """The latest machine sample; for a run that has ended, that sample is its last one: `at end HH:MM`."""
    s = snap.last_system if snap else None
    if not s:
        return plain("no machine samples yet", MUTED)
    at_end = []
    if final:
        when = clock_time(s["t"]) if isinstance(s.get("t"), (int, float)) else "?"
        at_end = [markup("[$text-muted]at end ($when), the run's last sample[/]", when=when)]
    if compact:
        first = markup("CPU $cpu of $n · RAM $used/${total}G", cpu=fmt.pct(s.get("cpu")), n=s.get("cpu_count") or "?",
                       used=fmt.gib(s.get("ram_used")), total=fmt.gib(s.get("ram_total")))
        second = []
        if s.get("proc_rss") is not None:
            second.append(f"run {fmt.size(s.get('proc_rss'))} {fmt.pct(s.get('proc_cpu'))}")
        if s.get("disk_free") is not None:
            second.append(f"disk {fmt.size(s['disk_free'])} free")
        return join_lines(at_end + [first] + ([plain(" · ".join(second))] if second else []))
    cpu_spark = "" if final else fmt.sparkline(snap.cpu, max(4, width - 16), lo=0.0, hi=100.0)
    lines = at_end + [
        markup("CPU  $cpu of $n [$accent]$spark[/]", cpu=fmt.pct(s.get("cpu")), n=s.get("cpu_count") or "?",
               spark=cpu_spark),
        markup("RAM  $used/${total}G $pct", used=fmt.gib(s.get("ram_used")), total=fmt.gib(s.get("ram_total")),
               pct=fmt.pct(s.get("ram_percent"))),
    ]
    if s.get("proc_rss") is not None:
        n = s.get("proc_count")
        lines.append(plain(f"run  RSS {fmt.size(s.get('proc_rss'))} · CPU {fmt.pct(s.get('proc_cpu'))}"
                           + (f" · {n} procs" if isinstance(n, int) and n > 1 else "")))
    if s.get("disk_free") is not None:
        free = s["disk_free"]
        style = "$error" if free < 5 * 2**30 else "$warning" if free < 20 * 2**30 else ""
        text = f"{fmt.size(free)} free of {fmt.size(s.get('disk_total'))}"
        lines.append(Content.assemble("disk ", (text, style) if style else text))
    return join_lines(lines)


SEVERITY_STYLES = {"critical": "$error", "error": "$error", "warning": "$warning", "warn": "$warning", "info": MUTED}


def eval_lines(evals: EvalInfo | None, now: float | None, width: int) -> list[Content]:
    """The headline eval's accuracy (and why that eval), and each evaluation still going."""
    if evals is None:
        return []
    out = []
    for r in evals.running:
        done, total = r.get("done"), r.get("total")
        where = f"{done}/{total}" if isinstance(done, int) and isinstance(total, int) else r.get("status") or "?"
        eta = eta_text(r.get("eta_s"), now)
        out.append(markup("[$accent]eval $status[/] $id · $where" + (" · $eta" if eta else ""),
                          status=r.get("status") or "?", id=fmt.clip(str(r.get("id")), 24), where=where, eta=eta))
    h = evals.headline
    if h:
        acc = fmt.accuracy_ci(h.get("accuracy"), h.get("ci"))
        why = h.get("why") or ""
        out.append(markup("eval accuracy [b]$acc[/b] [$text-muted]N $n · $why[/]", acc=acc, n=h.get("n") or "?",
                          why=fmt.clip(str(why), max(10, width - len(acc) - 20))))
    return out


def alert_line(alert: dict, superseded: str | None, now: float) -> Content:
    """`! warning step 40 · 2h ago: message hint`; superseded: muted, with why."""
    sev = str(alert.get("severity") or "warning")
    bits = []
    if alert.get("step") is not None:
        bits.append(f"step {alert.get('step')}")
    t = alert.get("t")
    if isinstance(t, (int, float)) and not isinstance(t, bool):
        bits.append(f"{fmt.age(t, now)} ago")
    where = " " + " · ".join(bits) if bits else ""
    if superseded:
        return markup("[$text-muted]✓ $sev$where: $message (superseded: $why)[/]", sev=sev, where=where,
                      message=alert.get("message", ""), why=superseded)
    hint = alert.get("hint")
    return markup("[" + SEVERITY_STYLES.get(sev, "$warning") + "]! $sev$where:[/] $message"
                  + (" [$text-muted]$hint[/]" if hint else ""), sev=sev, where=where,
                  message=alert.get("message", ""), hint=hint or "")


def status_text(snap: TailSnapshot | None, row: RunRow | None, now: float, width: int, log_lines: int = 2,
                evals: EvalInfo | None = None) -> Content:
    if row is None:
        return Content.from_markup("[$text-muted]no runs yet: press [b]n[/b] to start one "
                                   "(or `labtui run experiments/FILE.yaml`)[/]")
    icon = fmt.STATUS_ICONS.get(row.status, "?")
    style = fmt.STATUS_STYLES.get(row.status, "")
    bits = [Content.styled(f"{icon} {row.status}", style) if style else plain(f"{icon} {row.status}"),
            plain(row.id if width >= 100 else fmt.short_id(row.id, row.experiment))]
    if row.live:
        if row.pid:
            bits.append(plain(f"pid {row.pid}" + (f" on {row.host}" if row.host else "")))
        if row.heartbeat:
            bits.append(plain(f"heartbeat {fmt.age(row.heartbeat, now)} ago"))
    elif row.status == "queued" and row.queue_pos:
        bits.append(plain(f"#{row.queue_pos} in the queue"))
    elif row.final and row.ended:
        bits.append(plain(f"ended {fmt.age(row.ended, now)} ago"))
    lines = [Content(" · ").join(bits)]
    slurm = slurm_view.job_line(row)
    if slurm:  # `slurm job 123 on node vm · RUNNING · logs/RUN/job.sbatch` (the script where it fits)
        script = f" · logs/{row.id}/{slurm_view.SBATCH_FILE}"  # under the workspace (store.Workspace.logs)
        slurm_line = plain(slurm + script if len(slurm) + len(script) <= width else fmt.clip(slurm, width), MUTED)
        if not row.final:
            lines.append(slurm_line)  # an ended run's error (Slurm's end reason) comes first, below
    if row.warning:  # the engine's derived warning (store.SUPERVISOR_GONE: supervisor gone, worker alive)
        lines.append(plain("! " + fmt.clip(str(row.warning), width * 2), "$warning"))
    if row.error and row.status in ("failed", "crashed", "stopped"):
        lines.append(plain(fmt.clip(str(row.error), width * 2), "$warning" if row.status == "stopped" else "$error"))
    if slurm and row.final:
        lines.append(slurm_line)
    lines += eval_lines(evals, now, width)
    last = snap.last_train if snap else None
    annotated = alerts_mod.with_superseded(
        snap.alerts if snap else (), status=row.status, step=(last or {}).get("step", row.step),
        progress_t=(last or {}).get("t"), evals=evals.rows if evals else (), system=snap.last_system if snap else None)
    for alert, why in annotated[-2:]:
        lines.append(alert_line(alert, why, now))
    if snap and snap.corrupt:
        lines.append(plain(f"{snap.corrupt} unreadable metrics line(s) skipped", "$warning"))
    if snap and snap.log_tail:
        for ln in snap.log_tail[-log_lines:]:
            lines.append(plain("│ " + fmt.clip(fmt.last_cr_segment(str(ln)), max(10, width - 2)), MUTED))
    return join_lines(lines)


class Panel(Static):
    """A Static showing text built from its last `show()` arguments at its current width. If the
    text cannot be built (a record no one foresaw), the panel says so and the app goes on."""

    NAME = "panel"
    _args: tuple = ()
    _text: Content | None = None

    def show(self, *args) -> None:
        self._args = args
        self._draw()

    def on_resize(self) -> None:
        if self._args:
            self._draw()

    def _draw(self) -> None:
        try:
            text = self.build(*self._args, width=self.content_size.width or 30,
                              height=self.content_size.height or 4, compact=self.screen.has_class("-short"))
        except Exception as e:  # noqa: BLE001  shown in the panel, logged, the app goes on
            report = getattr(self.app, "report_error", None)
            line = report(self.NAME, e) if report else f"{self.NAME}: could not draw: {e}"
            text = plain(line, "$error")
        if self._text is None or not text.is_same(self._text):
            # as many lines as before: the panel keeps its size, so the screen needs no new layout
            # (the panels change every second while a run trains; a layout pass is a third of a frame)
            same_height = self._text is not None and text.plain.count("\n") == self._text.plain.count("\n")
            self._text = text
            self.update(text, layout=not same_height)

    def build(self, *args, width: int, height: int, compact: bool) -> Content:
        raise NotImplementedError


class ThroughputPanel(Panel):
    NAME = "throughput"

    def build(self, snap: TailSnapshot | None, row: RunRow | None, now: float | None = None, marked: tuple = (), *,
              width: int, height: int, compact: bool) -> Content:
        """The selected run's throughput; with runs marked, theirs side by side (marked_throughput_text)."""
        if marked:
            return marked_throughput_text(marked, width)
        return throughput_text(snap, row, width, compact, now)


class GpuPanel(Panel):
    NAME = "GPU"

    def build(self, snap: TailSnapshot | None, row: RunRow | None = None, *, width: int, height: int,
              compact: bool) -> Content:
        now = self.app.now() if hasattr(self.app, "now") else None
        return gpu_text(snap, width, compact, final=bool(row and row.final), now=now, max_lines=self.room())

    def room(self) -> int | None:
        """The lines this panel can have without pushing its neighbours out of its container (the
        dashboard's side column): the container's height less theirs; None before a layout."""
        parent = self.parent
        height = getattr(parent, "content_size", None)
        if parent is None or height is None or not height.height:
            return None
        others = sum(w.outer_size.height for w in parent.children if w is not self and w.display)
        return max(1, height.height - others - (self.outer_size.height - self.content_size.height))


class SystemPanel(Panel):
    NAME = "system"

    def build(self, snap: TailSnapshot | None, row: RunRow | None = None, *, width: int, height: int,
              compact: bool) -> Content:
        return system_text(snap, width, compact, final=bool(row and row.final))


class StatusPanel(Panel):
    NAME = "status"

    def build(self, snap: TailSnapshot | None, row: RunRow | None, now: float, evals: EvalInfo | None = None, *,
              width: int, height: int, compact: bool) -> Content:
        return status_text(snap, row, now, width, log_lines=max(1, height - 3), evals=evals)
