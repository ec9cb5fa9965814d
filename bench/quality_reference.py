#!/usr/bin/env python3
"""The course's procedure in transformers, on the data, base model and split of a
tp06 run directory, for the quality comparison of the train stage.

It runs TP 06 as the course does — names split at text start added as tokens
initialised to emb(reference word) + N(0, 0.01²), wte/wpe/lower half frozen,
256-token padded examples with labels = input_ids, HF Trainer with lr 5e-5,
2 × 8, 100 warm-up steps, weight decay 0.01, seed 42 — then measures the
held-out loss per character on the run's validation split, the same way the
train stage does (NLL of every predicted token of each article cut at
`max_length` tokens, divided by the characters those tokens cover), and the
training throughput (token positions per second, padding included).

    pip install torch transformers pyarrow
    python bench/quality_reference.py RUN_DIR BASE_MODEL_DIR [--epochs 2] [--threads 2]

Prints one JSON object.
"""
import argparse
import json
import math
import pathlib
import tempfile
import time

import pyarrow.parquet as pq
import torch
from transformers import AutoTokenizer, GPT2LMHeadModel, Trainer, TrainingArguments

p = argparse.ArgumentParser()
p.add_argument("run_dir")
p.add_argument("base")
p.add_argument("--epochs", type=float, default=2)
p.add_argument("--max-length", type=int, default=256)
p.add_argument("--threads", type=int, default=2)
a = p.parse_args()
torch.set_num_threads(a.threads)
run = pathlib.Path(a.run_dir)
train = pq.read_table(run / "data" / "train.parquet").to_pylist()
valid = pq.read_table(run / "data" / "valid.parquet").to_pylist()
names = pq.read_table(run / "data" / "names.parquet").column("name").to_pylist()

tok = AutoTokenizer.from_pretrained(a.base)
tok.pad_token = tok.eos_token
model = GPT2LMHeadModel.from_pretrained(a.base)
reference = next(w for w in ["Pokémon", "Pokemon", "animal"] if len(tok.encode(w, add_special_tokens=False)) == 1)
ref_id = tok.encode(reference, add_special_tokens=False)[0]
to_add = [n for n in names if len(tok.encode(n, add_special_tokens=False)) > 1]
old = len(tok)
tok.add_tokens(to_add)
model.resize_token_embeddings(len(tok), mean_resizing=False)
torch.manual_seed(42)
with torch.no_grad():
    emb = model.transformer.wte.weight
    for i in range(old, len(tok)):
        emb[i] = emb[ref_id] + torch.randn_like(emb[ref_id]) * 0.01
for p_ in list(model.transformer.wte.parameters()) + list(model.transformer.wpe.parameters()):
    p_.requires_grad = False
for block in model.transformer.h[: model.config.n_layer // 2]:
    for p_ in block.parameters():
        p_.requires_grad = False


class Articles(torch.utils.data.Dataset):
    def __init__(self, rows):
        enc = tok([r["content"] for r in rows], truncation=True, max_length=a.max_length, padding="max_length")
        self.items = [{"input_ids": i, "attention_mask": m, "labels": list(i)} for i, m in zip(enc["input_ids"], enc["attention_mask"])]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return {k: torch.tensor(v) for k, v in self.items[i].items()}


def held_out(model):
    model.eval()
    nll, chars = 0.0, 0
    with torch.no_grad():
        for r in valid:
            enc = tok(r["content"], truncation=True, max_length=a.max_length, return_offsets_mapping=True)
            ids = torch.tensor([enc["input_ids"]])
            logits = model(ids).logits[0, :-1]
            nll += torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum").item()
            offsets = enc["offset_mapping"]
            chars += offsets[-1][1] - offsets[1][0] if len(offsets) > 1 else 0
    return nll / chars


base_per_char = held_out(model)
data = Articles(train)
with tempfile.TemporaryDirectory() as tmp:
    args = TrainingArguments(
        output_dir=tmp, per_device_train_batch_size=2, gradient_accumulation_steps=8, learning_rate=5e-5,
        num_train_epochs=a.epochs, warmup_steps=100, weight_decay=0.01, max_grad_norm=1.0, seed=42,
        logging_steps=10, save_strategy="no", report_to=[], use_cpu=True, disable_tqdm=True,
    )
    trainer = Trainer(model=model, args=args, train_dataset=data)
    start = time.time()
    result = trainer.train()
    seconds = time.time() - start
steps = result.global_step
positions = steps * 16 * a.max_length  # every full accumulation step; the last of each epoch may be shorter
print(json.dumps({
    "procedure": "course (transformers Trainer)",
    "transformers": __import__("transformers").__version__,
    "torch": torch.__version__,
    "threads": a.threads,
    "added_tokens": len(to_add),
    "steps": steps,
    "train_seconds": seconds,
    "tokens_per_second": sum(len(x["input_ids"]) for x in data.items) * a.epochs / seconds,
    "final_train_loss": result.training_loss,
    "base_nats_per_char": base_per_char,
    "final_nats_per_char": held_out(model),
}, indent=1))
