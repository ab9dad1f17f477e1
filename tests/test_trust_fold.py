"""Issue 12, item 4: each duplicated idea exists once, and every caller goes through it."""

from __future__ import annotations

import json
import math

import pytest

from labtui.engine import alerts, evalstore, store


def test_one_nan_to_json_converter_for_run_rows_alerts_and_cli_json():
    assert store.jsonable({"a": [1.0, math.nan, {2: math.inf}], "b": (-math.inf,)}) == \
        {"a": [1.0, "nan", {"2": "inf"}], "b": ["-inf"]}
    alert = alerts.make_alert("x", "m", data={"loss": math.nan, "steps": [math.inf]})
    assert json.loads(json.dumps(alert, allow_nan=False))["data"] == {"loss": "nan", "steps": ["inf"]}


def test_runs_and_evals_are_picked_by_the_same_prefix_rule(tmp_path):
    ws = store.Workspace(tmp_path)
    a = ws.create_run("abc", {"experiment": "abc"})
    names = ["20260101-000000-score-cpu-aaaa", "20260101-000000-score-cpu-aaaab"]
    for n in names:
        (a.path / store.EVALS_DIR / n).mkdir(parents=True)
    paths = a.evals()
    # an exact id wins over the longer id it is a prefix of, for evals as for runs
    assert evalstore._pick(paths, names[0], "here").name == names[0]
    assert store.matching(paths, names[0], lambda p: p.name) == [paths[0]]
    assert store.matching(paths, "aaaab", lambda p: p.name) == [paths[1]]  # else a substring
    with pytest.raises(evalstore.EvalNotFound, match="ambiguous"):
        evalstore._pick(paths, "2026", "here")


def test_runs_and_evals_take_their_ids_from_one_mkdir(tmp_path):
    made = {store.new_run_dir(tmp_path / "logs", "x").name for _ in range(50)}
    assert len(made) == 50 and all(n.endswith(("-x-" + n[-4:])) for n in made)
