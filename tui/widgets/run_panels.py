"""The dashboard's text panels for the selected run: throughput, GPU, system, status.

Each panel is a Static that `show()`s a `TailSnapshot` (and the run's row); the text is built by
a plain function so it can be read and tested without an app. Styles are theme variables, so
the panels read the same with 16 colours.
"""

from __future__ import annotations

from textual.markup import escape
from textual.widgets import Static

from .. import format as fmt
from ..scan import RunRow
from ..tail import TailSnapshot, eta_seconds


def throughput_text(snap: TailSnapshot | None, row: RunRow | None, width: int, compact: bool = False) -> str:
    last = snap.last_train if snap else None
    if not last:
        if row and row.status == "queued":
            return "[$text-muted]queued: nothing to show yet[/]"
        return "[$text-muted]no training step logged yet[/]"
    step, total = last.get("step"), last.get("max_steps")
    eta = eta_seconds(last, snap.start) if row is None or row.live else None
    lines = [
        f"tok/s  [b]{fmt.rate(last.get('tokens_per_s'))}[/b] now · {fmt.rate(last.get('tokens_per_s_avg'))} avg",
        f"samp/s {fmt.rate(last.get('samples_per_s'))} · step/s {fmt.rate(last.get('steps_per_s'))}",
        f"step   [b]{step}[/b]/{total or '?'} · epoch {fmt.num(last.get('epoch'), 3)}",
        f"time   {fmt.duration(last.get('elapsed'))}" + (f" · ETA [b]{fmt.duration(eta)}[/b]" if eta is not None else ""),
    ]
    spark = "" if compact else fmt.sparkline(snap.tokens_per_s, max(4, width))
    if spark.strip():
        lines.append(f"[$accent]{spark}[/]")
    return "\n".join(lines)


def gpu_text(snap: TailSnapshot | None, width: int, compact: bool = False) -> str:
    system = snap.last_system if snap else None
    if not system:
        return "[$text-muted]no machine samples yet[/]"
    gpus = system.get("gpus") or []
    if not gpus:
        head = "[$warning]no NVIDIA GPU[/] [$text-muted](NVML not found)[/]"
        if compact:  # the System panel right below has the CPU and RAM
            return head
        ram = f"{fmt.gib(system.get('ram_used'))}/{fmt.gib(system.get('ram_total'))}G"
        return f"{head}\nCPU {fmt.pct(system.get('cpu'))} of {system.get('cpu_count') or '?'} · RAM {ram}"
    torch_mem = {d.get("index"): d for d in ((snap.last_memory or {}).get("devices") or [])}
    bar_width = max(4, width - 18)
    lines = []
    for g in gpus:
        i = g.get("index", 0)
        power = f"{g['power']:.0f}/{g['power_limit']:.0f}W" if g.get("power") is not None and g.get("power_limit") else ""
        temp = f"{g['temp']}°C" if g.get("temp") is not None else ""
        head = f"GPU{i} {fmt.pct(g.get('util'))} {temp} {power}".rstrip()
        room = width - len(head) - 1
        name = escape(fmt.clip(str(g.get("name") or "").replace("NVIDIA ", ""), room)) if room >= 6 else ""
        lines.append(f"[b]{head}[/b] [$text-muted]{name}[/]")
        used, total = g.get("mem_used"), g.get("mem_total")
        frac = used / total if used is not None and total else None
        style = "$error" if frac is not None and frac > 0.95 else "$warning" if frac is not None and frac > 0.85 else "$success"
        lines.append(f"NVML [{style}]{fmt.bar(frac, bar_width)}[/] {fmt.gib(used)}/{fmt.gib(total)}G")
        t = torch_mem.get(i)
        if t:
            a, r, p = fmt.gib(t.get("allocated")), fmt.gib(t.get("reserved")), fmt.gib(t.get("peak"))
            if width >= 48:
                lines.append(f"[$text-muted]torch (this run)[/] alloc {a} resv {r} peak {p}G")
            else:
                lines.append(f"[$text-muted]run torch a/r/p[/] {a}/{r}/{p}G")
        mem = fmt.sparkline(snap.gpu_mem.get(i, ()), max(4, width // 2 - 5), lo=0.0, hi=1.0)
        util = fmt.sparkline(snap.gpu_util.get(i, ()), max(4, width // 2 - 6), lo=0.0, hi=100.0)
        if (mem.strip() or util.strip()) and not compact:
            lines.append(f"mem [$accent]{mem}[/] util [$accent]{util}[/]")
    return "\n".join(lines)


def system_text(snap: TailSnapshot | None, width: int, compact: bool = False) -> str:
    s = snap.last_system if snap else None
    if not s:
        return "[$text-muted]no machine samples yet[/]"
    if compact:
        first = f"CPU {fmt.pct(s.get('cpu'))} of {s.get('cpu_count') or '?'} · RAM {fmt.gib(s.get('ram_used'))}/" \
                f"{fmt.gib(s.get('ram_total'))}G"
        second = []
        if s.get("proc_rss") is not None:
            second.append(f"run {fmt.size(s.get('proc_rss'))} {fmt.pct(s.get('proc_cpu'))}")
        if s.get("disk_free") is not None:
            second.append(f"disk {fmt.size(s['disk_free'])} free")
        return "\n".join([first, " · ".join(second)] if second else [first])
    cpu_spark = fmt.sparkline(snap.cpu, max(4, width - 16), lo=0.0, hi=100.0)
    lines = [
        f"CPU  {fmt.pct(s.get('cpu'))} of {s.get('cpu_count') or '?'} [$accent]{cpu_spark}[/]",
        f"RAM  {fmt.gib(s.get('ram_used'))}/{fmt.gib(s.get('ram_total'))}G {fmt.pct(s.get('ram_percent'))}",
    ]
    if s.get("proc_rss") is not None:
        n = s.get("proc_count")
        lines.append(f"run  RSS {fmt.size(s.get('proc_rss'))} · CPU {fmt.pct(s.get('proc_cpu'))}"
                     + (f" · {n} procs" if n and n > 1 else ""))
    if s.get("disk_free") is not None:
        free = s["disk_free"]
        style = "$error" if free < 5 * 2**30 else "$warning" if free < 20 * 2**30 else ""
        text = f"{fmt.size(free)} free of {fmt.size(s.get('disk_total'))}"
        lines.append(f"disk [{style}]{text}[/]" if style else f"disk {text}")
    return "\n".join(lines)


SEVERITY_STYLES = {"critical": "$error", "error": "$error", "warning": "$warning", "warn": "$warning", "info": "$text-muted"}


def status_text(snap: TailSnapshot | None, row: RunRow | None, now: float, width: int, log_lines: int = 2) -> str:
    if row is None:
        return "[$text-muted]no runs yet: press [b]n[/b] to start one (or `labtui run experiments/FILE.yaml`)[/]"
    icon = fmt.STATUS_ICONS.get(row.status, "?")
    style = fmt.STATUS_STYLES.get(row.status, "")
    head = f"[{style}]{icon} {row.status}[/]" if style else f"{icon} {row.status}"
    bits = [head, escape(row.id if width >= 100 else fmt.short_id(row.id, row.experiment))]
    if row.live:
        if row.pid:
            bits.append(f"pid {row.pid}" + (f" on {escape(row.host)}" if row.host else ""))
        if row.heartbeat:
            bits.append(f"heartbeat {fmt.age(row.heartbeat, now)} ago")
    elif row.status == "queued" and row.queue_pos:
        bits.append(f"#{row.queue_pos} in the queue")
    elif row.final and row.ended:
        bits.append(f"ended {fmt.age(row.ended, now)} ago")
    lines = [" · ".join(bits)]
    if row.error and row.status in ("failed", "crashed", "stopped"):
        lines.append(f"[{'$warning' if row.status == 'stopped' else '$error'}]{escape(fmt.clip(row.error, width * 2))}[/]")
    alerts = list(snap.alerts) if snap else []
    for a in alerts[-2:]:
        sev = str(a.get("severity") or "warning")
        hint = f" [$text-muted]{escape(str(a['hint']))}[/]" if a.get("hint") else ""
        step = f" step {a['step']}" if a.get("step") is not None else ""
        lines.append(f"[{SEVERITY_STYLES.get(sev, '$warning')}]! {escape(sev)}{step}:[/] {escape(str(a.get('message', '')))}{hint}")
    if snap and snap.corrupt:
        lines.append(f"[$warning]{snap.corrupt} unreadable metrics line(s) skipped[/]")
    if snap and snap.log_tail:
        for ln in snap.log_tail[-log_lines:]:
            lines.append(f"[$text-muted]│ {escape(fmt.clip(ln, max(10, width - 2)))}[/]")
    return "\n".join(lines)


class Panel(Static):
    """A Static showing text built from its last `show()` arguments at its current width."""

    _args: tuple = ()
    _text: str | None = None

    def show(self, *args) -> None:
        self._args = args
        self._draw()

    def on_resize(self) -> None:
        if self._args:
            self._draw()

    def _draw(self) -> None:
        text = self.build(*self._args, width=self.content_size.width or 30, height=self.content_size.height or 4,
                          compact=self.screen.has_class("-short"))
        if text != self._text:
            # as many lines as before: the panel keeps its size, so the screen needs no new layout
            # (the panels change every second while a run trains; a layout pass is a third of a frame)
            same_height = self._text is not None and text.count("\n") == self._text.count("\n")
            self._text = text
            self.update(text, layout=not same_height)

    def build(self, *args, width: int, height: int, compact: bool) -> str:
        raise NotImplementedError


class ThroughputPanel(Panel):
    def build(self, snap: TailSnapshot | None, row: RunRow | None, *, width: int, height: int, compact: bool) -> str:
        return throughput_text(snap, row, width, compact)


class GpuPanel(Panel):
    def build(self, snap: TailSnapshot | None, *, width: int, height: int, compact: bool) -> str:
        return gpu_text(snap, width, compact)


class SystemPanel(Panel):
    def build(self, snap: TailSnapshot | None, *, width: int, height: int, compact: bool) -> str:
        return system_text(snap, width, compact)


class StatusPanel(Panel):
    def build(self, snap: TailSnapshot | None, row: RunRow | None, now: float, *, width: int, height: int,
              compact: bool) -> str:
        return status_text(snap, row, now, width, log_lines=max(1, height - 3))
