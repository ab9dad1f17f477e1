"""Experiment files: inheritance, overrides, the recorded diff, and bad input (exit 2, nothing created)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import ROOT
from labtui.engine.cli import main as cli
from labtui.engine.config.experiment import ConfigError, deep_merge, diff, load_experiment, parse_overrides, parse_value


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def test_yaml_reads_5e_5_as_a_number():
    assert parse_value("5e-5") == pytest.approx(5e-5)
    assert parse_value("64") == 64
    assert parse_value("[q_proj, v_proj]") == ["q_proj", "v_proj"]
    assert parse_value("null") is None


def test_deep_merge_replaces_lists_and_merges_dicts():
    base = {"lora": {"r": 16, "target_modules": ["q_proj", "v_proj"]}, "trainer": "trainer"}
    out = deep_merge(base, {"lora": {"target_modules": ["o_proj"]}, "trainer": "sft"})
    assert out == {"lora": {"r": 16, "target_modules": ["o_proj"]}, "trainer": "sft"}
    assert base["lora"]["target_modules"] == ["q_proj", "v_proj"]  # not mutated


def test_extends_chain_and_diff_against_parent():
    exp = load_experiment(ROOT / "experiments" / "demo-sft.yaml")
    assert [p.name for p in exp.chain] == ["demo-sft.yaml", "demo-tuned.yaml", "demo-baseline.yaml"]
    assert exp.config["trainer"] == "sft"
    assert exp.config["lora"]["r"] == 16  # inherited from demo-tuned
    assert exp.config["training"]["max_steps"] == 120  # inherited from demo-baseline
    # only what this file names, and the loss target that comes with the trainer (task.loss_on's default)
    assert exp.changed == {"trainer": ["trainer", "sft"], "task.loss_on": ["all", "answer"]}


def test_tuned_changes_only_hyperparameters():
    exp = load_experiment(ROOT / "experiments" / "demo-tuned.yaml")
    assert set(exp.changed) == {"lora.r", "lora.lora_alpha", "training.learning_rate", "engine.empty_cache_every"}
    assert exp.changed["training.learning_rate"] == [3e-4, 2e-3]


def test_set_overrides_win_and_count_as_changes(tmp_path):
    exp = load_experiment(ROOT / "experiments" / "demo-baseline.yaml",
                          ["training.learning_rate=5e-5", "lora.r=64", "lora.target_modules=[q_proj, v_proj]"])
    assert exp.config["training"]["learning_rate"] == pytest.approx(5e-5)
    assert exp.config["lora"]["r"] == 64
    assert exp.config["lora"]["target_modules"] == ["q_proj", "v_proj"]
    assert exp.changed["lora.r"] == [4, 64]
    assert exp.changed["training.learning_rate"] == [3e-4, 5e-5]


def test_set_on_a_child_diffs_against_the_parent_file():
    exp = load_experiment(ROOT / "experiments" / "demo-tuned.yaml", ["training.max_steps=7"])
    assert exp.changed["training.max_steps"] == [120, 7]
    assert exp.changed["lora.r"] == [4, 16]


def test_diff_reports_added_and_removed_keys():
    assert diff({"a": {"x": 1}}, {"a": {"x": 1, "y": 2}}) == {"a.y": [None, 2]}
    assert diff({"a": {"x": 1}}, {"a": {}}) == {"a.x": [1, None]}


def test_parse_overrides_rejects_malformed():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["lora.r"])


def test_lora_null_means_full_fine_tuning(tmp_path):
    f = write(tmp_path / "full.yaml", """
        model: {model_name_or_path: demo/tiny-llama}
        lora: null
        dataset: {path: demo/ori_pqal.json}
    """)
    assert load_experiment(f).config["lora"] is None


# --- bad input: one clear message, exit 2, no run directory ----------------------------------------

BASE = """
model: {model_name_or_path: demo/tiny-llama}
dataset: {format: pubmedqa, path: demo/ori_pqal.json, test_split: demo/test_ground_truth.json}
training: {max_steps: 2}
"""

BAD = [
    ("unknown top-level key", "trainr: sft\n", "unknown key 'trainr' (did you mean 'trainer'?)"),
    ("unknown lora key", "lora: {rank: 8}\n", "lora: unknown key 'rank'"),
    ("unknown training key", "training: {learning_rat: 1.0e-4}\n", "unknown key 'learning_rat' (did you mean 'learning_rate'?)"),
    ("unknown model key", "model: {model_name: x}\n", "unknown key 'model_name' (did you mean 'model_name_or_path'?)"),
    ("wrong type", "training: {learning_rate: fast}\n", "training.learning_rate must be a number, got 'fast'"),
    ("wrong type in labtui section", "eval: {n: many}\n", "eval.n must be an integer, got 'many'"),
    ("bad choice", "trainer: sfft\n", "trainer must be one of sft, trainer, got 'sfft' (did you mean 'sft'?)"),
    ("sft key with plain Trainer", "trainer: trainer\ntraining: {max_length: 64}\n", "use trainer: sft"),
    ("bad lora value", "lora: {lora_dropout: 1.5}\n", "lora.lora_dropout must be in [0, 1), got 1.5"),
    ("bad lora rank", "lora: {r: 0}\n", "lora.r must be a positive integer, got 0"),
    ("library rejects value", "training: {lr_scheduler_type: wobbly}\n", "training: wobbly is not a valid SchedulerType"),
    ("missing dataset file", "dataset: {path: demo/nope.json}\n", "nope.json does not exist"),
    ("missing model folder", "model: {model_name_or_path: ./models/none}\n", "does not exist"),
    ("template field", "task: {template: '{abstract}'}\n", "task.template uses {abstract}"),
    ("unknown alert setting", "engine: {alerts: {stall_minutez: 5}}\n", "engine.alerts:"),
    ("managed key", "training: {output_dir: /tmp/x}\n", "training.output_dir is set by labtui"),
]


@pytest.mark.parametrize("name,extra,message", BAD, ids=[b[0] for b in BAD])
def test_bad_config_exits_2_with_message_and_creates_nothing(workspace, capsys, name, extra, message):
    f = workspace.root / "bad.yaml"
    f.write_text(BASE + extra)
    rc = cli.main(["--workspace", str(workspace.root), "run", str(f)])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err
    assert err.count("\n") == 1  # one line
    assert not workspace.logs.exists() or not any(workspace.logs.iterdir())


def test_bad_yaml_names_file_and_line(workspace, capsys):
    f = workspace.root / "broken.yaml"
    f.write_text("model:\n  model_name_or_path: demo/tiny-llama\ntraining: [unclosed\n")
    assert cli.main(["--workspace", str(workspace.root), "run", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}:" in err and "invalid YAML" in err


def test_missing_experiment_file(workspace, capsys):
    assert cli.main(["--workspace", str(workspace.root), "run", "experiments/none.yaml"]) == 2
    assert "no such experiment file" in capsys.readouterr().err


def test_extends_cycle(workspace, capsys):
    write(workspace.root / "a.yaml", "extends: b.yaml\n")
    write(workspace.root / "b.yaml", "extends: a.yaml\n")
    assert cli.main(["--workspace", str(workspace.root), "run", str(workspace.root / "a.yaml")]) == 2
    assert "'extends' cycle: a.yaml -> b.yaml -> a.yaml" in capsys.readouterr().err


def test_bad_set_value(workspace, capsys):
    rc = cli.main(["--workspace", str(workspace.root), "run", "experiments/demo-baseline.yaml", "--set", "lora.r=big"])
    assert rc == 2
    assert "lora" in capsys.readouterr().err
    assert not workspace.logs.exists()


def test_shipped_experiments_all_validate(workspace):
    """Every file in experiments/ parses; the GPU recipes name a hub model, the demos validate fully."""
    from labtui.engine.cli.runs import load_and_validate

    for f in sorted((ROOT / "experiments").glob("*.yaml")):
        exp = load_experiment(f)
        assert exp.config["model"]["model_name_or_path"], f
        if f.name.startswith("demo-"):
            load_and_validate(workspace, f, [])
