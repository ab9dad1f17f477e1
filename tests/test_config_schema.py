"""The one experiment schema: each key's type, default and choices written once (DEFAULTS is built
from SCHEMA), the watchdogs' `engine.alerts` keys validated through it, and the `launch:` section
of multi-process runs (issue 13). Bad values go through the real CLI: exit 2, one
`labtui: error: ...` line, and no run directory.
"""

from __future__ import annotations

import textwrap

import pytest
from conftest import ROOT, labtui
from labtui.engine.config import experiment as config
from labtui.engine.config.experiment import (
    ACCELERATE_PRESETS,
    CHOICES,
    DEFAULTS,
    NO_DEFAULT,
    SCHEMA,
    ConfigError,
    check_field,
    check_files,
    flatten,
    launch_settings,
    load_experiment,
)
from labtui.engine.rundir import alerts, store

LAUNCH_DEFAULTS = {"launcher": "python", "nproc_per_node": "auto", "accelerate_config": None, "extra_args": [],
                   "executor": "local"}


# --- defaults come from the schema ---------------------------------------------------------------


def test_defaults_are_the_schema_defaults_and_nothing_else():
    with_default = {key: f.default for key, f in SCHEMA.items() if f.default is not NO_DEFAULT}
    leaves = flatten(DEFAULTS)  # an empty section (training: {}) has no leaves
    # every default in DEFAULTS is a schema key's, with that value
    assert set(leaves) <= set(with_default)
    assert all(leaves[key] == with_default[key] for key in leaves)
    # and every schema key with a default is in DEFAULTS, at its dotted place
    for key, default in with_default.items():
        node = DEFAULTS
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, key
            node = node[part]
        assert node == default, key
    assert set(with_default) - set(leaves) == {"training"}  # passed to TrainingArguments: nothing filled in
    # keys the libraries default (peft's bias, every TrainingArguments key) are checked, never filled in
    assert "bias" not in DEFAULTS["lora"] and DEFAULTS["training"] == {}
    assert SCHEMA["lora.bias"].default is NO_DEFAULT and SCHEMA["training.learning_rate"].default is NO_DEFAULT


def test_sections_and_their_order():
    assert list(DEFAULTS) == ["description", "model", "trainer", "lora", "training", "dataset", "task", "eval",
                              "engine", "launch", "slurm", "notify"]
    assert DEFAULTS["launch"] == LAUNCH_DEFAULTS
    assert DEFAULTS["engine"]["alerts"] == alerts.ALERT_DEFAULTS  # the watchdogs' own keys and defaults
    # a list default is not shared: changing one resolved config leaves DEFAULTS alone
    cfg = config.resolve({})
    cfg["launch"]["extra_args"].append("--x")
    cfg["engine"]["alerts"]["disable"].append("stalled")
    assert DEFAULTS["launch"]["extra_args"] == [] and alerts.ALERT_DEFAULTS["disable"] == []


def test_alert_key_types_follow_their_defaults():
    assert SCHEMA["engine.alerts.frozen_steps"].kind == "int"
    assert SCHEMA["engine.alerts.stall_minutes"].kind == "number"
    assert SCHEMA["engine.alerts.stop_on"].kind == "list"
    assert check_field("engine.alerts.frozen_steps", 0) == "engine.alerts.frozen_steps must be a whole number >= 1, got 0"
    assert check_field("engine.alerts.frozen_steps", 2.5).startswith("engine.alerts.frozen_steps must be an integer")
    assert check_field("engine.alerts.stall_minutes", 0.5) is None  # fractions are fine
    assert check_field("engine.alerts.spike_ratio", -1) == "engine.alerts.spike_ratio must be a number above 0, got -1"
    assert check_field("engine.alerts.disable", ["stalled", "gpu_memory"]) is None
    assert "did you mean 'nan_loss'" in check_field("engine.alerts.stop_on", ["nan_los"])


def test_launch_choices_for_the_cli_and_the_tui():
    assert CHOICES["launch.launcher"] == ("python", "torchrun", "accelerate") == config.LAUNCHERS
    assert ACCELERATE_PRESETS == ("multi_gpu", "zero2", "zero3", "fsdp")
    # the Launch screen's as-you-type check (`more --set`) reads the same schema
    assert check_field("launch.launcher", "mpi").startswith("launch.launcher must be one of python, torchrun, accelerate")
    assert check_field("launch.nproc_per_node", 8) is None and check_field("launch.nproc_per_node", "auto") is None
    for bad in (0, -1, "two", True, 1.5):
        assert check_field("launch.nproc_per_node", bad).startswith("launch.nproc_per_node must be an integer, 1 or more, or auto")
    assert check_field("launch.extra_args", ["--max-restarts", "3"]) is None
    assert "quote numbers" in check_field("launch.extra_args", ["--max-restarts", 3])
    assert check_field("launch.extra_args", "--max-restarts 3") == "launch.extra_args must be a list, got '--max-restarts 3'"


# --- every shipped experiment still loads, and gets the new keys ---------------------------------


def test_shipped_experiments_load_with_a_complete_launch_section():
    for f in sorted((ROOT / "experiments").glob("*.yaml")):
        exp = load_experiment(f)
        assert exp.config["launch"] == LAUNCH_DEFAULTS, f
        assert exp.config["engine"]["alerts"] == alerts.ALERT_DEFAULTS, f
        assert not any(key.startswith(("launch.", "engine.alerts.")) for key in exp.changed), f


def write(path, text: str):
    path.write_text(textwrap.dedent(text))
    return path


def test_null_means_the_default_in_launch_and_alerts(tmp_path):
    f = write(tmp_path / "x.yaml", """
        model: {model_name_or_path: demo/tiny-llama}
        engine: {alerts: {stall_minutes: null, frozen_steps: 5}}
        launch: {launcher: torchrun, nproc_per_node: null}
    """)
    cfg = load_experiment(f).config
    assert cfg["launch"] == {**LAUNCH_DEFAULTS, "launcher": "torchrun"}
    assert cfg["engine"]["alerts"] == {**alerts.ALERT_DEFAULTS, "frozen_steps": 5}
    g = write(tmp_path / "y.yaml", "model: {model_name_or_path: demo/tiny-llama}\nlaunch: null\nengine: null\n")
    cfg = load_experiment(g).config
    assert cfg["launch"] == LAUNCH_DEFAULTS and cfg["engine"] == DEFAULTS["engine"]


def test_a_set_launch_key_is_a_change_and_old_configs_read_as_one_process(tmp_path):
    exp = load_experiment(ROOT / "experiments" / "demo-baseline.yaml",
                          ["launch.launcher=torchrun", "launch.nproc_per_node=2", "launch.extra_args=[--max-restarts, '0']"])
    assert exp.config["launch"] == {"launcher": "torchrun", "nproc_per_node": 2, "accelerate_config": None,
                                    "extra_args": ["--max-restarts", "0"], "executor": "local"}
    assert exp.changed["launch.launcher"] == ["python", "torchrun"]
    assert exp.changed["launch.nproc_per_node"] == ["auto", 2]
    # a run's config.yaml from before the section existed
    assert launch_settings({"model": {}}) == LAUNCH_DEFAULTS
    assert launch_settings({"launch": {"launcher": "accelerate", "accelerate_config": "zero2", "nproc_per_node": None}}) == \
        {**LAUNCH_DEFAULTS, "launcher": "accelerate", "accelerate_config": "zero2"}
    assert alerts.alert_settings({"engine": {"seed": 1}}) == alerts.ALERT_DEFAULTS


def test_accelerate_config_a_preset_or_a_yaml_file(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "qa.jsonl").write_text('{"question": "q?", "context": "c", "answer": "yes"}\n')
    base = ["model.model_name_or_path=./model", "dataset.format=jsonl_qa", "dataset.path=qa.jsonl",
            "dataset.test_split=null", "launch.launcher=accelerate"]
    f = ROOT / "experiments" / "demo-baseline.yaml"
    for preset in ACCELERATE_PRESETS:
        check_files(load_experiment(f, [*base, f"launch.accelerate_config={preset}"]).config, tmp_path, "x.yaml")
    write(tmp_path / "acc.yaml", "compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_GPU\nnum_processes: 2\n")
    check_files(load_experiment(f, [*base, "launch.accelerate_config=acc.yaml"]).config, tmp_path, "x.yaml")
    (tmp_path / "broken.yaml").write_text("distributed_type: [MULTI_GPU\n")
    with pytest.raises(ConfigError, match=r"x.yaml: launch.accelerate_config: .*broken.yaml:2: invalid YAML"):
        check_files(load_experiment(f, [*base, "launch.accelerate_config=broken.yaml"]).config, tmp_path, "x.yaml")


# --- bad values through the real CLI: exit 2, one line, no run directory ---------------------------


@pytest.fixture
def exp_ws(ws):
    """A workspace whose experiment names a model folder and a data file that exist."""
    (ws.root / "model").mkdir()
    (ws.root / "qa.jsonl").write_text('{"question": "q?", "context": "c", "answer": "yes"}\n')
    write(ws.root / "exp.yaml", """
        model: {model_name_or_path: ./model}
        trainer: trainer
        dataset: {format: jsonl_qa, path: qa.jsonl}
    """)
    (ws.root / "conf").mkdir()
    return ws


def refused(ws: store.Workspace, *sets: str) -> str:
    proc = labtui(ws, "run", "exp.yaml", *(x for s in sets for x in ("--set", s)))
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    err = proc.stderr
    assert err.startswith("labtui: error: exp.yaml: ") and err.count("\n") == 1, err  # one line
    assert proc.stdout == ""
    assert not any(ws.logs.iterdir())  # no run directory
    return err


BAD_LAUNCH = [
    ("launcher", ["launch.launcher=mpi"],
     "launch.launcher must be one of python, torchrun, accelerate, got 'mpi'"),
    ("nproc 0", ["launch.launcher=torchrun", "launch.nproc_per_node=0"],
     "launch.nproc_per_node must be an integer, 1 or more, or auto (one process per visible GPU), got 0"),
    ("nproc two", ["launch.launcher=torchrun", "launch.nproc_per_node=two"],
     "launch.nproc_per_node must be an integer, 1 or more, or auto (one process per visible GPU), got 'two'"),
    ("nproc with python", ["launch.nproc_per_node=4"],
     "launch.nproc_per_node is 4, but launch.launcher: python starts one process; set launch.launcher: torchrun"),
    ("accelerate config with torchrun", ["launch.launcher=torchrun", "launch.accelerate_config=zero3"],
     "launch.accelerate_config is for accelerate launch, but launch.launcher is torchrun; set launch.launcher: accelerate"),
    ("accelerate config with the default launcher", ["launch.accelerate_config=zero3"],
     "launch.launcher is python; set launch.launcher: accelerate"),
    ("missing accelerate file", ["launch.launcher=accelerate", "launch.accelerate_config=conf/zero9.yaml"],
     "launch.accelerate_config: {root}/conf/zero9.yaml does not exist (a YAML file, or a preset: multi_gpu, zero2, zero3, fsdp)"),
    ("preset typo", ["launch.launcher=accelerate", "launch.accelerate_config=zero4"],
     "does not exist (a YAML file, or a preset: multi_gpu, zero2, zero3, fsdp) (did you mean 'zero3'?)"),
    ("accelerate config a folder", ["launch.launcher=accelerate", "launch.accelerate_config=conf"],
     "launch.accelerate_config: {root}/conf is not a regular file"),
    ("extra_args a string", ["launch.extra_args=--max-restarts"], "launch.extra_args must be a list, got '--max-restarts'"),
    ("extra_args a number", ["launch.extra_args=[--max-restarts, 3]"], "launch.extra_args must be a list of strings"),
    ("unknown launch key", ["launch.nprocs=2"], "launch: unknown key 'nprocs' (did you mean 'nproc_per_node'?)"),
    ("launch not a section", ["launch=torchrun"], "'launch' must be a mapping, got 'torchrun'"),
]


@pytest.mark.parametrize("name,sets,message", BAD_LAUNCH, ids=[b[0] for b in BAD_LAUNCH])
def test_bad_launch_values_are_refused_by_the_cli(exp_ws, name, sets, message):
    err = refused(exp_ws, *sets)
    assert message.format(root=exp_ws.root) in err, err


BAD_ALERTS = [
    ("whole number", "engine.alerts.frozen_steps=0", "engine.alerts.frozen_steps must be a whole number >= 1, got 0"),
    ("a fraction where a count is meant", "engine.alerts.spike_window=2.5",
     "engine.alerts.spike_window must be an integer, got 2.5"),
    ("negative number", "engine.alerts.spike_ratio=-1", "engine.alerts.spike_ratio must be a number above 0, got -1"),
    ("not a number", "engine.alerts.stall_minutes=soon", "engine.alerts.stall_minutes must be a number, got 'soon'"),
    ("unknown key", "engine.alerts.stall_minutez=5", "engine.alerts: unknown key 'stall_minutez' (did you mean 'stall_minutes'?)"),
    ("stop_on a supervisor check", "engine.alerts.stop_on=[stalled]",
     "engine.alerts.stop_on: unknown alert kind 'stalled' (stop_on works for the checks the worker runs: nan_loss"),
    ("unknown kind", "engine.alerts.disable=[nan_los]", "engine.alerts.disable: unknown alert kind 'nan_los' (did you mean 'nan_loss'?)"),
    ("disable not a list", "engine.alerts.disable=nan_loss", "engine.alerts.disable must be a list, got 'nan_loss'"),
    ("alerts not a section", "engine.alerts=7", "'engine.alerts' must be a mapping, got 7"),
]


@pytest.mark.parametrize("name,item,message", BAD_ALERTS, ids=[b[0] for b in BAD_ALERTS])
def test_bad_alert_settings_are_refused_by_the_cli(exp_ws, name, item, message):
    err = refused(exp_ws, item)
    assert message in err, err


def test_good_launch_values_pass_the_schema_in_the_cli(exp_ws):
    """Accepted launch settings get as far as the file checks: here the (missing) model is the error."""
    goods = [["launch.launcher=torchrun", "launch.nproc_per_node=2", "launch.extra_args=[--max-restarts, '0']"],
             ["launch.launcher=accelerate", "launch.accelerate_config=zero2"],
             ["launch.launcher=python", "launch.nproc_per_node=1", "engine.alerts.stall_minutes=0.5",
              "engine.alerts.stop_on=[nan_loss, weights_frozen]"]]
    for sets in goods:
        err = refused(exp_ws, *sets, "model.model_name_or_path=./gone")
        assert f"model.model_name_or_path: {exp_ws.root}/gone does not exist" in err, (sets, err)
