"""`labtui notify`: the workspace's notification settings, and `--test` to send a test message."""

from __future__ import annotations

import os
import socket

from labtui.engine.cli.cli_base import UsageError, workspace_from
from labtui.engine.config.experiment import NOTIFY_DEFAULT_EVENTS, notify_error

# engine.runtime.notify (and through it apprise) is imported by the command itself: every `labtui`
# command's parser registers this one


def cmd_notify(args) -> int:
    from labtui.engine.runtime import notify, queue

    ws = workspace_from(args)
    section = queue.settings(ws).get("notify")
    error = notify_error(section, str(ws.root / queue.SETTINGS_FILE))
    if error:
        raise UsageError(error)
    section = section or {}
    urls = list(args.url or section.get("urls") or [])
    if not (args.test or args.url):
        if not section.get("urls"):
            print(f"no notifications: add `notify: {{urls: [...], events: [...]}}` to {ws.root / queue.SETTINGS_FILE} "
                  f"(or to an experiment), then `labtui notify --test`")
            return 0
        print(f"{len(section['urls'])} URL(s) in {queue.SETTINGS_FILE}, events: {', '.join(section.get('events') or NOTIFY_DEFAULT_EVENTS)}")
        print("`labtui notify --test` sends a test message to each")
        return 0
    if not urls:
        raise UsageError(f"no URLs to test: {queue.SETTINGS_FILE} has no notify.urls; pass --url URL "
                         f"(e.g. --url ntfy://my-topic)")
    title = "labtui: test notification"
    body = f"a test from labtui on {socket.gethostname()} (workspace {ws.root}, user {os.environ.get('USER', '?')})"
    results = notify.deliver(urls, title, body, tries=1)
    for name, why in results:
        print(f"ok      {name}" if why is None else f"FAILED  {name}: {why}")
    failed = sum(1 for _, why in results if why)
    if failed:
        print(f"{failed} of {len(results)} failed")
    return 1 if failed else 0


def register(sub) -> None:
    p = sub.add_parser("notify", help="the notification settings (notify: in labtui.yaml); --test sends a test message")
    p.add_argument("--test", action="store_true", help="send a test message to each URL and say which failed (exit 1)")
    p.add_argument("--url", action="append", metavar="URL", help="an apprise URL to test instead of labtui.yaml's (repeatable; implies --test)")
    p.set_defaults(func=cmd_notify)
