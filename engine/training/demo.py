"""The offline demo: a synthetic PubMedQA-style dataset and a tiny Llama model built from it.

`prepare(workspace)` writes, once:
  demo/ori_pqal.json            synthetic questions in PubMedQA's PQA-L schema (keyed by id)
  demo/test_ground_truth.json   the held-out test ids, as PubMedQA's official split file
  demo/tiny-llama/              a ~1M-parameter LlamaForCausalLM and its byte-level BPE tokenizer,
                                pre-trained briefly on the demo abstracts (not on the answers),
                                saved with save_pretrained and loaded back like any hub model.
The answer is learnable from the context (the results sentence carries it), so fine-tuning
really raises accuracy and better settings really score better.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

DEMO_DIR = "demo"
MODEL_DIR = "tiny-llama"
DATA_FILE = "ori_pqal.json"
SPLIT_FILE = "test_ground_truth.json"

_INTERVENTIONS = [
    "metformin", "aspirin", "early mobilisation", "vitamin D", "statin therapy", "telemonitoring",
    "laparoscopic repair", "probiotics", "nurse-led follow-up", "high-flow oxygen", "tranexamic acid",
    "cognitive therapy", "low-dose steroids", "beta blockers", "acupuncture", "zinc supplements",
    "robotic surgery", "exercise training", "omega-3 fatty acids", "antibiotic prophylaxis",
]
_OUTCOMES = [
    "mortality", "length of stay", "pain scores", "readmission", "glycaemic control", "blood pressure",
    "wound infection", "quality of life", "functional recovery", "bone density", "delirium",
    "renal function", "exacerbations", "fatigue", "survival", "adherence",
]
_POPULATIONS = [
    "elderly patients", "children", "adults with diabetes", "pregnant women", "smokers",
    "patients after surgery", "nursing home residents", "patients with heart failure",
    "adolescents", "patients in intensive care",
]
_DESIGNS = [
    "a randomised controlled trial", "a prospective cohort study", "a retrospective review",
    "a multicentre trial", "a case-control study",
]
_BACKGROUND = [
    "The role of {i} in {p} remains debated.",
    "Few studies have examined {i} among {p}.",
    "{I} is widely used, but evidence in {p} is limited.",
    "Whether {i} changes {o} is unclear.",
]
_METHODS = [
    "We conducted {d} of {n} {p}.",
    "In {d}, {n} {p} were assigned to {i} or usual care.",
    "Data from {n} {p} were analysed in {d}.",
]
_RESULTS = {
    "yes": [
        "{I} significantly improved {o} compared with controls.",
        "Patients receiving {i} had clearly better {o}.",
        "{I} was associated with a marked benefit in {o}.",
        "A significant improvement in {o} was observed with {i}.",
    ],
    "no": [
        "{I} had no significant effect on {o}.",
        "There was no difference in {o} between groups.",
        "{I} did not change {o} compared with controls.",
        "No benefit of {i} on {o} was found.",
    ],
    "maybe": [
        "The effect of {i} on {o} was inconclusive.",
        "Results for {o} were mixed and uncertain.",
        "A possible trend in {o} with {i} did not reach certainty.",
        "Evidence on {o} remained unclear after {i}.",
    ],
}
_CONCLUSION = {
    "yes": "{I} improves {o} in {p}.",
    "no": "{I} does not improve {o} in {p}.",
    "maybe": "The benefit of {i} for {o} in {p} is uncertain.",
}
_QUESTIONS = [
    "Does {i} improve {o} in {p}?",
    "Is {i} beneficial for {o} among {p}?",
    "Can {i} reduce problems with {o} in {p}?",
]


def synth_pubmedqa(n: int = 1200, seed: int = 0) -> dict[str, dict]:
    """Deterministic synthetic PQA-L records; answer mix like PubMedQA (55% yes, 34% no, 11% maybe)."""
    rng = random.Random(seed)
    out: dict[str, dict] = {}
    for k in range(n):
        answer = rng.choices(["yes", "no", "maybe"], weights=[55, 34, 11])[0]
        i, o, p = rng.choice(_INTERVENTIONS), rng.choice(_OUTCOMES), rng.choice(_POPULATIONS)
        fill = {"i": i, "I": i[0].upper() + i[1:], "o": o, "p": p, "d": rng.choice(_DESIGNS), "n": rng.randint(40, 900)}
        contexts = [
            rng.choice(_BACKGROUND).format(**fill),
            rng.choice(_METHODS).format(**fill),
            rng.choice(_RESULTS[answer]).format(**fill),
        ]
        pmid = str(90000000 + k)
        out[pmid] = {
            "QUESTION": rng.choice(_QUESTIONS).format(**fill),
            "CONTEXTS": contexts,
            "LABELS": ["BACKGROUND", "METHODS", "RESULTS"],
            "MESHES": [fill["I"], fill["o"].title()],
            "YEAR": str(rng.randint(2000, 2024)),
            "reasoning_required_pred": answer,
            "reasoning_free_pred": answer,
            "final_decision": answer,
            "LONG_ANSWER": _CONCLUSION[answer].format(**fill),
        }
    return out


def demo_paths(workspace: Path) -> dict[str, Path]:
    d = Path(workspace) / DEMO_DIR
    return {"dir": d, "model": d / MODEL_DIR, "data": d / DATA_FILE, "split": d / SPLIT_FILE}


def is_prepared(workspace: Path) -> bool:
    p = demo_paths(workspace)
    return (p["model"] / "config.json").exists() and p["data"].exists() and p["split"].exists()


def prepare(workspace: Path, n: int = 1200, test_n: int = 300, seed: int = 0, log=print) -> dict[str, Path]:
    """Write the demo data and model once; a second call is a no-op."""
    paths = demo_paths(workspace)
    if is_prepared(workspace):
        return paths
    paths["dir"].mkdir(parents=True, exist_ok=True)
    data = synth_pubmedqa(n, seed)
    ids = list(data)
    test_ids = ids[-test_n:]
    _write_json(paths["data"], data)
    _write_json(paths["split"], {k: data[k]["final_decision"] for k in test_ids})
    log(f"demo data: {len(data)} synthetic PubMedQA-style questions in {paths['data']}")
    build_tiny_model(paths["model"], data, set(test_ids), seed=seed, log=log)
    return paths


def _write_json(path: Path, obj) -> None:
    from labtui.engine.rundir.store import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def _corpus(data: dict[str, dict]) -> list[str]:
    """Text the base model is pre-trained on: questions and abstracts, never the decision."""
    texts = []
    for rec in data.values():
        texts.append("Context: " + " ".join(rec["CONTEXTS"]) + "\nQuestion: " + rec["QUESTION"] + "\nAnswer:")
        texts.append(rec["LONG_ANSWER"])
    return texts


def build_tiny_model(out_dir: Path, data: dict[str, dict], test_ids: set[str], seed: int = 0,
                     pretrain_steps: int = 150, log=print) -> None:
    """Train a byte-level BPE tokenizer and pre-train a tiny Llama on the abstracts; save both."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    texts = _corpus({k: v for k, v in data.items() if k not in test_ids})
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = ["<|pad|>", "<|bos|>", "<|eos|>"]
    trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    # the answer words are common words of the language: whole tokens, as in a real vocabulary
    tok.train_from_iterator(texts + [" yes no maybe"] * 200, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>")
    tokenizer.model_max_length = 512

    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=160, intermediate_size=432, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    # A short causal-LM pre-training on the abstracts, so the base model knows the language
    # (like a real base model) but has never seen a decision: fine-tuning has something to learn.
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = random.Random(seed)
    for step in range(pretrain_steps):
        # each document ends with EOS, as in a real base model's pre-training
        docs = [t + tokenizer.eos_token for t in rng.sample(texts, 16)]
        batch = tokenizer(docs, return_tensors="pt", padding=True, truncation=True, max_length=160)
        labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
        loss = model(**batch, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        if step % 50 == 0 or step == pretrain_steps - 1:
            log(f"demo model: pre-training step {step + 1}/{pretrain_steps} loss {loss.item():.3f}")
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    log(f"demo model: {n_params / 1e6:.2f}M parameters, saved to {out_dir}")
