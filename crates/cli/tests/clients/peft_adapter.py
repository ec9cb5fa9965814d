"""Hugging Face `peft` against the adapters `tp06` writes and reads.

    python3 peft_adapter.py check BASE ADAPTER EXPORT IDS_JSON BASE_ROWS
        Loads BASE (an HF model directory sized to the adapter's tokenizer),
        cut to its first BASE_ROWS rows of wte (the base before names were
        added) and resized back to the tokenizer as peft's docs ask for added
        tokens (`resize_token_embeddings`: the added rows are transformers'
        fresh ones, which only the adapter's trainable tokens can make right),
        with the adapter directory ADAPTER through `PeftModel.from_pretrained`,
        and EXPORT (the merged model) with plain transformers. Prints one JSON
        object: `peft` and `export`, the logits of IDS_JSON ([[ids]]) as
        nested lists; `warnings`, what loading the adapter warned (Python
        warnings and the transformers/peft loggers), but the FutureWarning
        peft 0.21 draws from transformers 5 whatever the adapter.

    python3 peft_adapter.py make BASE OUT IDS_JSON NEW
        Writes a peft adapter onto BASE into OUT as peft saves it (LoRA r=4,
        alpha 8, on c_attn and mlp.c_proj of block 1, every factor set to
        seeded random values; the base's last 3 rows of wte as trainable
        tokens, set to random values), and OUT-merged, its `merge_and_unload()`
        saved by transformers with BASE's tokenizer files. Prints one JSON
        object: `greedy`, the ids of IDS_JSON ([ids]) followed by NEW greedy
        tokens from the PeftModel (transformers' `generate`, do_sample=False).
"""
import json
import logging
import pathlib
import shutil
import sys
import warnings

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import GPT2LMHeadModel


class Captured(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def loaded_quietly(load):
    """`load()`, and what it warned."""
    handler = Captured()
    loggers = [logging.getLogger(name) for name in ("transformers", "peft")]
    for logger in loggers:
        logger.addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load()
    for logger in loggers:
        logger.removeHandler(handler)
    said = [str(w.message) for w in caught if "is_gradient_checkpointing" not in str(w.message)]
    return model, said + handler.messages


def logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.tolist()


def check(base, adapter, export, ids, base_rows):
    resized = GPT2LMHeadModel.from_pretrained(base)
    rows = resized.transformer.wte.weight.shape[0]
    resized.resize_token_embeddings(base_rows)
    resized.resize_token_embeddings(rows, mean_resizing=False)
    model, said = loaded_quietly(lambda: PeftModel.from_pretrained(resized, adapter))
    model.eval()
    merged = GPT2LMHeadModel.from_pretrained(export).eval()
    print(json.dumps({"peft": logits(model, ids), "export": logits(merged, ids), "warnings": said}))


def make(base, out, ids, new):
    torch.manual_seed(3)
    model = GPT2LMHeadModel.from_pretrained(base)
    rows = model.transformer.wte.weight.shape[0]
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "mlp.c_proj"], layers_to_transform=[1],
                        trainable_token_indices={"wte": list(range(rows - 3, rows))}, task_type="CAUSAL_LM")
    model = get_peft_model(model, config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or "trainable_tokens_delta" in name:
                p.copy_(torch.randn_like(p) * 0.3)
    model.save_pretrained(out, save_embedding_layers=False)
    model.eval()
    with torch.no_grad():
        greedy = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=new, do_sample=False,
                                attention_mask=torch.ones(1, len(ids), dtype=torch.long), pad_token_id=1)
    merged = model.merge_and_unload()
    merged_dir = pathlib.Path(out + "-merged")
    merged.save_pretrained(merged_dir)
    for f in pathlib.Path(base).iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")) or f.name in ("vocab.json", "merges.txt"):
            shutil.copy(f, merged_dir / f.name)
    print(json.dumps({"greedy": greedy[0].tolist()}))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "check":
        check(args[0], args[1], args[2], json.loads(args[3]), int(args[4]))
    elif command == "make":
        make(args[0], args[1], json.loads(args[2]), int(args[3]))
    else:
        sys.exit(f"unknown command {command}")
