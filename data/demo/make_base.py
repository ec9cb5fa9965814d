#!/usr/bin/env python3
"""Makes the demo's base model directory, data/demo/base/: the files of a hub
GPT-2 repo minus the weights (the demo initialises them from scratch).

A byte-level BPE tokenizer is trained on the demo's *non-Pokémon* articles, so
that, as with asi/gpt-fr-cased-*, most Pokémon names are split into several
tokens and the vocab stage has names to add. Needs `pip install tokenizers`.

    python data/demo/make_base.py
"""
import json
import pathlib

from tokenizers import ByteLevelBPETokenizer

HERE = pathlib.Path(__file__).resolve().parent
OUT = HERE / "base"
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as in asi/gpt-fr-cased-*

names = set((HERE / "names.txt").read_text(encoding="utf-8").split("\n"))
articles = [json.loads(line) for line in (HERE / "articles.jsonl").read_text(encoding="utf-8").splitlines()]
texts = [a["content"] for a in articles if a["title"] not in names]

tokenizer = ByteLevelBPETokenizer(add_prefix_space=False)
tokenizer.train_from_iterator(texts, vocab_size=1024, min_frequency=2, special_tokens=SPECIALS, show_progress=False)
OUT.mkdir(exist_ok=True)
tokenizer.save_model(str(OUT))  # vocab.json, merges.txt
vocab_size = tokenizer.get_vocab_size()

(OUT / "special_tokens_map.json").write_text(json.dumps(
    {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>"}) + "\n")
config = {
    "activation_function": "gelu_new",
    "architectures": ["GPT2LMHeadModel"],
    "attn_pdrop": 0.1,
    "bos_token_id": 0,
    "embd_pdrop": 0.1,
    "eos_token_id": 2,
    "initializer_range": 0.02,
    "layer_norm_epsilon": 1e-05,
    "model_type": "gpt2",
    "n_embd": 64,
    "n_head": 4,
    "n_inner": None,
    "n_layer": 2,
    "n_positions": 256,
    "pad_token_id": 1,
    "resid_pdrop": 0.1,
    "scale_attn_weights": True,
    "tie_word_embeddings": True,
    "vocab_size": vocab_size,
}
(OUT / "config.json").write_text(json.dumps(config, indent=2) + "\n")
print(f"{OUT}: vocab {vocab_size}, trained on {len(texts)} articles")
