"""The metrics index (metrics.idx) and the one-pass JSONL parse: the same records as reading the
JSONL line by line, whatever happened to the files."""

from __future__ import annotations

import json
import math

import numpy as np
from labtui.engine.rundir import store


def records(n: int = 50) -> list[dict]:
    out = [{"kind": "start", "t": 100.0, "step": 0, "max_steps": n, "resumed": False}]
    for s in range(1, n + 1):
        out.append({"kind": "train", "t": 100.0 + s, "step": s, "loss": 1.0 / s, "tokens_per_s": 10.0 * s})
        if s % 10 == 0:
            out.append({"kind": "eval", "t": 100.5 + s, "step": s, "eval_loss": 2.0 / s})
    out.append({"kind": "train", "t": 999.0, "step": n + 1, "loss": float("nan")})
    out.append({"kind": "train", "t": 999.5, "step": n + 2, "loss": None})
    out.append({"kind": "memory", "t": 1000.0, "devices": []})
    out.append({"kind": "start", "t": 1001.0, "step": 20, "resumed": True})
    out.append({"kind": "end", "t": 1002.0, "step": 21, "status": "completed", "error": None})
    return out


def write(path, recs, indexed=True):
    w = store.IndexedJsonlWriter(path) if indexed else store.JsonlWriter(path)
    for r in recs:
        w.write(r)
    w.close()


def check_index(path, recs):
    """Every entry points at its line and carries its kind, step, value and t."""
    entries, end = store.read_metrics_index(path)
    data = path.read_bytes()
    assert end == len(data) and len(entries) == len(recs)
    for e, rec in zip(entries, recs):
        line = data[int(e["offset"]):int(e["offset"]) + int(e["length"])]
        assert json.loads(line) == json.loads(store.dumps(rec))  # NaN-safe comparison through dumps
        code = int(e["kind"]) & store.KIND_MASK
        assert code == store.KIND_CODES.get(rec.get("kind"), store.KIND_OTHER)
        value = {"train": rec.get("loss"), "eval": rec.get("eval_loss"),
                 "start": 1.0 if rec.get("resumed") else 0.0}.get(rec["kind"])
        assert bool(int(e["kind"]) & store.HAS_VALUE) == (value is not None)
        if value is not None:
            assert (math.isnan(value) and math.isnan(e["value"])) or e["value"] == value
        assert (e["step"] == rec["step"]) if "step" in rec else math.isnan(e["step"])
        assert e["t"] == rec["t"]


def test_the_index_describes_every_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    recs = records()
    write(path, recs)
    assert (tmp_path / "metrics.idx").stat().st_size == 40 * len(recs)
    check_index(path, recs)
    assert store.read_jsonl(path)[-1] == recs[-1]  # the JSONL itself is as before


def test_a_writer_indexes_what_an_older_writer_left_and_ends_a_partial_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    recs = records(30)
    write(path, recs[:20], indexed=False)  # no index at all (a run from before the index)
    with open(path, "ab") as f:
        f.write(b'{"kind": "train", "st')  # the worker died mid-write
    write(path, recs[20:])
    lines = path.read_bytes().split(b"\n")
    assert lines[20] == b'{"kind": "train", "st'  # the partial line is ended, not glued to the next
    entries, end = store.read_metrics_index(path)
    assert end == path.stat().st_size and len(entries) == len(recs) + 1
    assert int(entries[20]["kind"]) == store.KIND_CORRUPT
    reader = store.JsonlReader(path)
    assert json.dumps(reader.read_new()) == json.dumps([json.loads(store.dumps(r)) for r in recs])
    assert reader.corrupt == 1


def test_a_crash_between_the_two_writes_is_caught_up_on_reopening(tmp_path):
    path = tmp_path / "metrics.jsonl"
    recs = records(30)
    write(path, recs[:10])
    with open(path, "ab") as f:  # JSONL lines written, their entries not (yet)
        for r in recs[10:15]:
            f.write((store.dumps(r) + "\n").encode())
    entries, end = store.read_metrics_index(path)
    assert len(entries) == 10 and end < path.stat().st_size  # readers take the rest from the JSONL
    with open(tmp_path / "metrics.idx", "ab") as f:
        f.write(b"\x00" * 17)  # and a torn entry
    write(path, recs[15:])
    check_index(path, recs)


def test_an_index_that_does_not_describe_the_file_is_not_used(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write(path, records(20))
    other = records(25)
    path.write_text("".join(store.dumps({**r, "kind": "memory"}) + "\n" for r in other))  # replaced
    assert store.read_metrics_index(path) is None
    write(path, other[:3])  # a writer opening it re-indexes from the start
    entries, end = store.read_metrics_index(path)
    assert end == path.stat().st_size and len(entries) == len(other) + 3


def test_index_entries_past_the_end_of_a_cut_file_are_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    recs = records(20)
    write(path, recs)
    lines = path.read_bytes().split(b"\n")
    path.write_bytes(b"\n".join(lines[:12]) + b"\n")
    entries, end = store.read_metrics_index(path)
    assert len(entries) == 12 and end == path.stat().st_size


def test_no_index_or_an_empty_one(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write(path, records(5), indexed=False)
    assert store.read_metrics_index(path) is None
    (tmp_path / "metrics.idx").write_bytes(b"")
    assert store.read_metrics_index(path) is None
    assert store.index_dtype().itemsize == store.INDEX_ENTRY.size == 40
    assert np.dtype(store.index_dtype()).names[:3] == ("offset", "length", "kind")


def test_one_pass_parse_reads_the_same_records_as_line_by_line(tmp_path):
    path = tmp_path / "m.jsonl"
    recs = records(40)
    path.write_text("\n".join(store.dumps(r) for r in recs) + "\n\n  \n")
    got = store.JsonlReader(path).read_new()
    assert json.dumps(got) == json.dumps([json.loads(store.dumps(r)) for r in recs])
    assert store._loads_lines(path.read_bytes()) is not None  # it took the one-pass path


def test_one_pass_parse_falls_back_for_lines_that_are_not_one_object(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2}, {"step": 3}\n[4]\n"x"\n{"step": 5}\n\xff\n')
    assert store._loads_lines(path.read_bytes()) is None
    r = store.JsonlReader(path)
    assert [x["step"] for x in r.read_new()] == [1, 5]
    assert r.corrupt == 4
