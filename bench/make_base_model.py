#!/usr/bin/env python3
"""Writes a randomly initialised GPT-2 of the course model's shape —
`asi/gpt-fr-cased-base`: 24 blocks, 14 heads of 128, n_embd 1792,
n_positions 1024 — in the hub layout of the asi repos (`config.json`, a
torch-pickled `pytorch_model.bin` with `transformer.` keys, the tokenizer
files of TOKENIZER_DIR), for measuring the model stage and the pipeline on a
1 B-parameter model without a download:

    python bench/make_base_model.py OUT_DIR TOKENIZER_DIR [--vocab-size N] [--shape small]

`--shape small` writes `asi/gpt-fr-cased-small`'s shape instead (12 blocks,
12 heads of 64, n_embd 768).

The vocabulary is TOKENIZER_DIR's (e.g. ../shared/models/gpt2-fr-mini: 8,000,
so 942 M parameters and a 3.8 GB pickle) unless --vocab-size says otherwise
(50,000 as on the hub: 1.02 B, 4.1 GB). Make it in a temporary directory;
never commit it.
"""
import argparse
import json
import pathlib
import shutil
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "fixtures"))
from make_model_fixtures import save_pytorch_bin  # noqa: E402

TOKENIZER_FILES = ["vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"]

p = argparse.ArgumentParser()
p.add_argument("out", type=pathlib.Path)
p.add_argument("tokenizer", type=pathlib.Path)
p.add_argument("--vocab-size", type=int)
p.add_argument("--shape", choices=["base", "small"], default="base")
a = p.parse_args()
shape = {"base": dict(n_layer=24, n_head=14, n_embd=1792), "small": dict(n_layer=12, n_head=12, n_embd=768)}[a.shape]
vocab = a.vocab_size or len(json.loads((a.tokenizer / "vocab.json").read_text()))
started = time.time()
torch.manual_seed(0)
config = GPT2Config(**shape, n_positions=1024, vocab_size=vocab,
                    bos_token_id=0, eos_token_id=2, pad_token_id=1)
model = GPT2LMHeadModel(config)
a.out.mkdir(parents=True, exist_ok=True)
config.save_pretrained(a.out)
save_pytorch_bin(model, config, a.out)
for name in TOKENIZER_FILES:
    if (a.tokenizer / name).exists():
        shutil.copy(a.tokenizer / name, a.out / name)
params = sum(t.numel() for t in model.parameters())
size = (a.out / "pytorch_model.bin").stat().st_size
print(f"{a.out}: {params:,} parameters, pytorch_model.bin {size / 1e9:.2f} GB, {time.time() - started:.0f} s")
