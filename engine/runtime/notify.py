"""Notifications through apprise: a run that ends, an alert, an evaluation's result, sent to the URLs of
`notify:` in the workspace's labtui.yaml (every run) and in the run's experiment (that run).

    notify:
      urls: ["ntfy://my-topic", "slack://T000/B000/XXXX"]    # ntfy.sh's topic my-topic; a Slack webhook
      events: [completed, failed, crashed, stopped, eval_completed, alert:warning]

Who sends: the supervisor (the run's end, the alerts in alerts.jsonl at each heartbeat, an evaluation's
end), and any reader that finds a run crashed with nobody left to record it (`labtui runs`, `show`,
`queue`, the TUI's monitor). Each event is sent once per run: the first process to claim its key in the
run's `notified.json` (records.Notified; under an flock, written atomically) sends it, every other one
sees the key and does nothing. The sending itself is a detached process (`python -m
labtui.engine.runtime.notify RUN_DIR KEY`, its pid recorded in the entry): it waits for the workspace's
rate limit (PER_MINUTE), tries each URL TRIES times with a growing pause, records the outcome in
notified.json and writes each failure to the run's log (`[labtui] notify: ... failed: ...`); it gives
up after DEADLINE_S. So a dead notification server never blocks, delays or fails a run. A sender killed
mid-send leaves its entry `sending`; once that pid is gone (or, with none recorded, after
SENDING_TIMEOUT_S) the next reader or supervisor that looks claims it again and sends it once more
(sender_gone, resend_orphans), never while the sender lives.

Light: apprise is imported only where a message is sent.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, cast

from labtui.engine.config.experiment import NOTIFY_DEFAULT_EVENTS, NOTIFY_RUN_EVENTS, notify_error
from labtui.engine.rundir import alerts, fmt, records, store

NOTIFIED_FILE = "notified.json"  # in the run directory: {event key: what was sent, when, to how many, the outcome}
LOCK_FILE = ".notified.lock"
RATE_FILE = ".notify-rate.json"  # in logs/: the times of the last minute's messages, workspace-wide
RATE_LOCK = ".notify-rate.lock"
PER_MINUTE = 10  # messages per minute per workspace; more wait for a free slot
MAX_RATE_WAIT_S = 600.0  # ... at most this long, then the message is dropped (and that is logged)
TRIES = 3  # attempts per URL
BACKOFF_S = (2.0, 8.0)  # the pauses between them
DEADLINE_S = MAX_RATE_WAIT_S + 180  # the sender process ends by then whatever happens
SENDING_TIMEOUT_S = DEADLINE_S + 60  # a claim this old with no sender recorded was never sent (sender_gone)
MAX_RESENDS = 2  # a notification whose sender was killed mid-send goes again at most this often
BODY_CHARS = 500


# --- who gets what ------------------------------------------------------------------------------


def _workspace_section(ws_root: Path) -> tuple[dict | None, str | None]:
    from labtui.engine.runtime import queue

    section = queue.settings(store.Workspace(ws_root)).get("notify")
    error = notify_error(section, queue.SETTINGS_FILE)
    return (None, error) if error else (section, None)


def wants(events: Any, event: str) -> bool:
    """Whether an `events:` list asks for `event`; `alert:S` is asked for by alert:S or any lower severity."""
    on = events if isinstance(events, list) else NOTIFY_DEFAULT_EVENTS
    if event.startswith("alert:"):
        rank = {s: i for i, s in enumerate(alerts.SEVERITIES)}  # critical 0, warning 1, info 2
        have = rank.get(event.split(":", 1)[1])
        return have is not None and any(isinstance(o, str) and o.startswith("alert:") and
                                        rank.get(o.split(":", 1)[1], -1) >= have for o in on)
    return event in on


def targets(run: store.Run, event: str) -> list[str]:
    """The apprise URLs that `event` of `run` goes to: labtui.yaml's notify, then the run's own."""
    from labtui.engine.runtime.launcher import home_workspace

    section, error = _workspace_section(home_workspace(run))
    if error:
        log(run, f"ignoring labtui.yaml's notify: {error}")
    own = run.config().get("notify")
    urls: list[str] = []
    for sec in (section, own if isinstance(own, dict) and not notify_error(own, "config.yaml") else None):
        if isinstance(sec, dict) and wants(sec.get("events"), event):
            urls += [u for u in sec.get("urls") or [] if isinstance(u, str)]
    return list(dict.fromkeys(urls))


def log(run: store.Run, line: str) -> None:
    """One `[labtui] notify: ...` line in the run's log (never raises)."""
    try:
        with open(run.file(store.LOG_FILE), "ab") as f:
            f.write(f"[labtui] {time.strftime('%Y-%m-%d %H:%M:%S')} notify: {line}\n".encode())
    except OSError:
        pass


# --- once per event -------------------------------------------------------------------------------


_flock = store.file_lock


def notified(run: store.Run) -> dict[str, records.Notified]:
    return records.notified(store.read_json(run.file(NOTIFIED_FILE), {}))


def sender_gone(entry: records.Notified, now: float | None = None) -> bool:
    """Whether a `sending` entry's sender died before it recorded an outcome (killed mid-send: the OOM
    killer, a reboot): its pid, on this host, is recorded and no longer that process, or, with no pid
    recorded (the claimer died before starting it) or one on another host sharing the workspace, the
    claim is older than SENDING_TIMEOUT_S (the sender's own deadline is shorter). Such an entry counts
    as not sent; while its sender lives it is never sent again."""
    if entry.get("status") != "sending":
        return False
    pid = entry.get("pid")
    if pid is not None and entry.get("host") in (None, socket.gethostname()):
        return not store.process_alive(pid, entry.get("pid_start"))
    t = entry.get("t")
    return t is None or (time.time() if now is None else now) - t > SENDING_TIMEOUT_S


def _done(run: store.Run, key: str) -> bool:
    """`key` is in notified.json and not a send whose sender died (see sender_gone)."""
    entry = notified(run).get(key)
    return entry is not None and not sender_gone(entry)


def _claim(run: store.Run, key: str, entry: records.Notified) -> bool:
    """Write `entry` under `key` in notified.json unless the key is there already (and not left
    `sending` by a dead sender: then it is claimed again, at most MAX_RESENDS times); True if this call did."""
    try:
        with _flock(run.file(LOCK_FILE)):
            data = notified(run)
            old = data.get(key)
            if old is not None:
                if not sender_gone(old):
                    return False
                resent = (old.get("resent") or 0) + 1
                if resent > MAX_RESENDS:
                    data[key] = {**old, "status": "failed", "pid": None,
                                 "error": f"its sender was killed {resent} times before it finished"}
                    store.atomic_write_json(run.file(NOTIFIED_FILE), data)
                    return False
                entry = {**entry, "resent": resent}
                log(run, f"{entry.get('event')}: its sender died mid-send; sending it again")
            data[key] = entry
            store.atomic_write_json(run.file(NOTIFIED_FILE), data)
            return True
    except OSError:  # a workspace this process cannot write: whoever can write it sends
        return False


def _record(run: store.Run, key: str, **updates: Any) -> None:
    try:
        with _flock(run.file(LOCK_FILE)):
            data = notified(run)
            data[key] = cast(records.Notified, {**(data.get(key) or {}), **updates})
            store.atomic_write_json(run.file(NOTIFIED_FILE), data)
    except OSError as e:
        log(run, f"cannot record {key} in {NOTIFIED_FILE}: {e}")


def _start_sender(run: store.Run, key: str) -> None:
    """The detached sender of a claimed `key`; its pid goes into the entry (sender_gone reads it)."""
    child = subprocess.Popen([sys.executable, "-m", "labtui.engine.runtime.notify", str(run.path), key],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True, close_fds=True)
    threading.Thread(target=child.wait, daemon=True).start()  # reaped in a long-lived caller
    try:
        with _flock(run.file(LOCK_FILE)):
            data = notified(run)
            if (data.get(key) or {}).get("status") == "sending":  # not finished already
                data[key] = {**data[key], "pid": child.pid, "pid_start": store.process_start_time(child.pid),
                             "host": socket.gethostname()}
                store.atomic_write_json(run.file(NOTIFIED_FILE), data)
    except OSError as e:
        log(run, f"cannot record {key}'s sender in {NOTIFIED_FILE}: {e}")


def send(run: store.Run, event: str, key: str, title: str, body: str) -> bool:
    """Send `event` of `run` once: claim `key` in notified.json and start the sender, detached. False
    when nobody asked for the event or it was claimed before. Never raises, never waits."""
    try:
        urls = targets(run, event)
        if not urls:
            return False
        body = body if len(body) <= BODY_CHARS else body[:BODY_CHARS - 1] + "…"
        entry: records.Notified = {"event": event, "t": time.time(), "title": title, "body": body, "to": len(urls),
                                   "status": "sending"}
        if not _claim(run, key, entry):
            return False
        _start_sender(run, key)
        return True
    except Exception as e:  # noqa: BLE001 - a notification never takes its caller down
        log(run, f"{event} not sent: {type(e).__name__}: {e}")
        return False


def resend_orphans(run: store.Run) -> int:
    """Send again, once, each notification of `run` whose sender died mid-send (see sender_gone), with
    the title and body it was claimed with. One stat when the run has no notified.json. Never raises."""
    try:
        if not run.file(NOTIFIED_FILE).exists():
            return 0
        sent = 0
        for key, entry in notified(run).items():
            if sender_gone(entry):
                sent += send(run, str(entry.get("event")), key, str(entry.get("title")), str(entry.get("body")))
        return sent
    except Exception as e:  # noqa: BLE001
        log(run, f"re-send failed: {type(e).__name__}: {e}")
        return 0


# --- the events -------------------------------------------------------------------------------------


def _attempt(raw: dict) -> int:
    """Which start of the run an end belongs to (a resumed run can crash again)."""
    t = raw.get("resumed") or raw.get("started") or raw.get("created") or 0
    return int(t) if isinstance(t, (int, float)) and not isinstance(t, bool) else 0


def _name(run: store.Run) -> str:
    exp = run.info().get("experiment")
    return f"{run.id}" + (f" ({exp})" if exp and exp not in run.id else "")


def run_message(run: store.Run, state: dict) -> tuple[str, str]:
    """(title, body) of a run's end: what happened, where, and the command to run next."""
    status = str(state.get("status"))
    row = run.summary()
    step, total = row.get("step"), row.get("max_steps")
    at = f" at step {step}/{total or '?'}" if step else ""
    error = fmt.printable(str(state.get("error") or row.get("error") or "")).strip()
    why = f": {error}" if error else ""
    rid = run.id
    kind = run.info().get("kind")
    checkpoint = run.latest_checkpoint() if kind in (None, "train") else None
    if kind == "eval":  # an evaluation's folder: its run's evaluations say what happened
        again = f"see `labtui evals {run.path.parent.parent.name}`"
    elif checkpoint is not None:
        again = f"`labtui resume {rid}` continues from {checkpoint.name}"
    else:
        again = f"`labtui retry {rid}` runs it again"
    if status == "completed":
        loss = f", train loss {fmt.num(row.get('train_loss'))}" if row.get("train_loss") is not None else ""
        body = f"completed{at}{loss}; see `labtui show {rid}`"
    elif status == "stopped":
        body = f"stopped{at}{why}; {again}"
    else:
        if "SIGKILL (often" in error:  # supervisor.describe_signal's words, shorter
            why = ": " + re.sub(r"SIGKILL \(often[^)]*\)\)?", "SIGKILL, likely out of memory (check `dmesg`)", error)
        look = f"see `labtui logs {rid}`, then " if status == "failed" and kind != "eval" else ""
        body = f"{status}{at}{why}; {look}{again}"
    host = state.get("host") or run.raw_state().get("host")
    return f"labtui: {_name(run)} {status}" + (f" on {host}" if host else ""), body


def run_ended(run: store.Run, state: dict) -> bool:
    """The supervisor's (or a reader's) hook when a run reaches a final state."""
    status = state.get("status")
    if status not in NOTIFY_RUN_EVENTS:
        return False
    try:
        raw = {**run.raw_state(), **state}
        key = f"{status}:{_attempt(raw)}"
        if _done(run, key):  # sent already (a reader looks again and again)
            return False
        title, body = run_message(run, raw)
    except Exception as e:  # noqa: BLE001
        log(run, f"{status} not sent: {type(e).__name__}: {e}")
        return False
    return send(run, str(status), key, title, body)


def crashed_by_reader(ws: store.Workspace, rows: list[dict]) -> int:
    """A reader found runs `crashed` that no supervisor recorded (both processes gone): notify each once;
    and any notification of these runs whose sender died mid-send goes again (resend_orphans).
    `rows`: `labtui runs`' rows (store.Run.summary), or any dicts with `id` and the derived `status`.
    Returns how many were sent."""
    sent = 0
    for row in rows:
        run = store.Run(ws.logs / str(row.get("id")))
        sent += resend_orphans(run)
        if row.get("status") != "crashed":
            continue
        raw = run.raw_state()
        if raw.get("status") in store.LIVE:  # the crash is derived, not recorded by a supervisor
            sent += run_ended(run, run.state())
    return sent


def reader_check(ws: store.Workspace) -> int:
    """crashed_by_reader over every run of the workspace, for a reader that has no rows of its own
    (`labtui queue`): a derived status only where state.json says the run is live."""
    rows = []
    for run in ws.iter_runs():
        status = run.raw_state().get("status")
        rows.append({"id": run.id, "status": run.state().get("status") if status in store.LIVE else status})
    return crashed_by_reader(ws, rows)


def alert_message(run: store.Run, alert: dict) -> tuple[str, str]:
    step = f" at step {alert['step']}" if alert.get("step") is not None else ""
    hint = f"; {alert['hint']}" if alert.get("hint") else ""
    body = f"{alert.get('kind')}{step}: {alert.get('message')}{hint}; `labtui show {run.id}`"
    return f"labtui: {_name(run)} alert [{alert.get('severity')}]", fmt.printable(body)


def new_alerts(run: store.Run, since: float) -> int:
    """Notify each alert of `run` raised at or after `since` (each once: its kind and time are the key)."""
    sent, done = 0, notified(run)
    for alert in alerts.read_alerts(run):
        t = alert.get("t")
        if not isinstance(t, (int, float)) or t < since or alert.get("severity") not in alerts.SEVERITIES:
            continue
        key = f"alert:{alerts.alert_key(alert)}:{t:.3f}"
        if key not in done or sender_gone(done[key]):
            title, body = alert_message(run, alert)
            sent += send(run, f"alert:{alert['severity']}", key, title, body)
    return sent


class AlertWatch:
    """The supervisor's heartbeat check for new alerts (alerts.jsonl re-read only when it changed)."""

    def __init__(self, run: store.Run, since: float):
        self.run, self.since, self._size = run, since, -1

    def tick(self) -> None:
        try:
            size = os.stat(self.run.file(store.ALERTS_FILE)).st_size
        except OSError:
            return
        if size == self._size:
            return
        self._size = size
        try:
            new_alerts(self.run, self.since)
        except Exception as e:  # noqa: BLE001 - never takes the run down
            log(self.run, f"alert check failed: {type(e).__name__}: {e}")


def eval_message(ev: store.Run) -> tuple[str, str]:
    """(title, body) of a completed evaluation: accuracy [95% CI], N, and against the workspace's
    baseline (the run marked in logs/.labtui-baseline) the difference and McNemar's p."""
    from labtui.engine.analysis import evalstore, stats

    row = evalstore.eval_row(ev.path)
    parent = store.Run(ev.path.parent.parent)
    acc, ci = row.get("accuracy"), row.get("ci")
    text = f"accuracy {acc:.3f}" if isinstance(acc, (int, float)) else "accuracy -"
    if isinstance(ci, list) and len(ci) == 2:
        text += f" [{ci[0]:.3f}, {ci[1]:.3f}]"
    text += f" ({evalstore.eval_settings_text(row)})"
    base_id = store.read_text(parent.path.parent / BASELINE_FILE, "").strip()
    if base_id and base_id != parent.id and (parent.path.parent / base_id).is_dir():
        try:
            res = evalstore.compare_sources(store.Run(parent.path.parent / base_id), ev.path)
            text += (f"; Δ {res['diff'] * 100:+.1f} points vs baseline {base_id} "
                     f"(McNemar p {stats.format_p(res['mcnemar_p'])})")
        except Exception as e:  # noqa: BLE001 - no comparable baseline eval: the accuracy alone
            text += f"; not compared with baseline {base_id}: {str(e).splitlines()[0][:120]}"
    return (f"labtui: {_name(parent)} eval {ev.id} completed",
            fmt.printable(f"{text}; `labtui evals {parent.id}`"))


BASELINE_FILE = ".labtui-baseline"  # the TUI's baseline mark (one run id) in logs/


def eval_ended(ev: store.Run, state: dict) -> bool:
    """The eval supervisor's hook: `eval_completed` when an evaluation completes (its failures are the
    run events of the eval directory)."""
    if state.get("status") != "completed":
        return run_ended(ev, state)
    try:
        title, body = eval_message(ev)
    except Exception as e:  # noqa: BLE001
        log(ev, f"eval_completed not sent: {type(e).__name__}: {e}")
        return False
    return send(ev, "eval_completed", f"eval_completed:{_attempt({**ev.raw_state(), **state})}", title, body)


# --- sending -----------------------------------------------------------------------------------------


def _redact(url: str) -> str:
    """scheme://host/… without the rest (tokens, topics), for a URL apprise could not parse."""
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@]*@?[^/?#]*)", url)
    host = m.group(1) if m else url[:12]
    return re.sub(r"//[^@/]*@", "//***@", host) + ("/…" if len(url) > len(host) else "")


def deliver(urls: list[str], title: str, body: str, tries: int = TRIES,
            backoff: tuple[float, ...] = BACKOFF_S) -> list[tuple[str, str | None]]:
    """Send one message to each URL: [(the URL with its secrets hidden, None or why it failed)]."""
    import apprise

    out: list[tuple[str, str | None]] = []
    for url in urls:
        plugin = apprise.Apprise.instantiate(url)
        if not plugin:
            out.append((_redact(url), "not a URL apprise understands (see https://github.com/caronc/apprise/wiki)"))
            continue
        name = plugin.url(privacy=True).split("?")[0]
        ap = apprise.Apprise()
        ap.add(plugin)
        error: str | None = "not sent"
        for attempt in range(max(1, tries)):
            with apprise.LogCapture(level=logging.WARNING, fmt="%(message)s") as captured:
                ok = ap.notify(body=body, title=title)
            if ok:
                error = None
                break
            lines = [ln.strip() for ln in captured.getvalue().splitlines() if ln.strip()]
            error = " / ".join(dict.fromkeys(lines))[:300] or "apprise reported a failure"
            if attempt < tries - 1:
                time.sleep(backoff[min(attempt, len(backoff) - 1)])
        out.append((name, error))
    return out


def _rate_slot(logs: Path, now: float) -> float:
    """Take a slot of the workspace's rate limit: 0.0, or the seconds until one is free."""
    with _flock(logs / RATE_LOCK):
        times = store.read_json(logs / RATE_FILE, [])
        times = [t for t in times if isinstance(t, (int, float)) and now - t < 60] if isinstance(times, list) else []
        if len(times) >= PER_MINUTE:
            return 60.0 - (now - min(times)) + 0.05
        store.atomic_write_json(logs / RATE_FILE, [*times, now])
        return 0.0


def _send_claimed(run: store.Run, key: str) -> int:
    entry = notified(run).get(key)
    if not isinstance(entry, dict) or entry.get("status") != "sending":
        return 0
    event = str(entry.get("event"))
    from labtui.engine.runtime.launcher import home_workspace

    logs = home_workspace(run) / "logs"
    start = time.time()
    while (wait := _rate_slot(logs, time.time())) > 0:
        if time.time() - start + wait > MAX_RATE_WAIT_S:
            _record(run, key, status="dropped", error=f"rate limit ({PER_MINUTE} a minute) still reached after "
                                                     f"{MAX_RATE_WAIT_S:.0f} s")
            log(run, f"{event} dropped: more than {PER_MINUTE} messages a minute in this workspace")
            return 1
        time.sleep(wait)
    results = deliver(targets(run, event), str(entry.get("title")), str(entry.get("body")))
    failed = {name: why for name, why in results if why}
    for name, why in failed.items():
        log(run, f"{event} to {name} failed: {why}")
    _record(run, key, status="failed" if failed and len(failed) == len(results) else "sent", sent=time.time(),
            ok=[name for name, why in results if not why], failed=failed)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) != 2:
        print("usage: python -m labtui.engine.runtime.notify RUN_DIR KEY", file=sys.stderr)
        return 2
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(int(DEADLINE_S))  # whatever hangs, the sender is gone by then
    run = store.Run(Path(argv[0]))
    try:
        return _send_claimed(run, argv[1])
    except Exception as e:  # noqa: BLE001
        log(run, f"{argv[1]} failed: {type(e).__name__}: {e}")
        _record(run, argv[1], status="failed", error=f"{type(e).__name__}: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
