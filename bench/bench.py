#!/usr/bin/env python3
"""The PyTorch/transformers side of `cargo xtask bench`: exactly the work the
`tp06 bench-one` side does, on the same shapes, batch and threads: f32 on CPU
by default, or on a CUDA GPU, and in bf16.

  train:    optimiser steps of the course's loop — micro-batch 2 × 256 tokens,
            accumulation 8, loss over all label tokens, clipping at 1.0, AdamW
            with HF's decay groups, linear schedule, wte/wpe/lower half frozen —
            on a randomly initialised GPT-2; token positions per second.
            --freeze recommended: the same, but the last 1,000 rows of wte (the
            added names) train: a hook zeroes the other rows' gradient and they
            are put back after each step (AdamW's decay would move them).
            --freeze lora: peft's LoRA (`get_peft_model`, the `lora` preset's
            LoraConfig as --lora-* give it) on the base, frozen, with the last
            1,000 rows of wte as peft's trainable tokens.
  forward:  inference forward passes to the logits, 8 batches of 2 × 256
            tokens per step, no gradient; token positions per second.
  generate: greedy decoding with the KV cache, 16-token prompt, 128 new tokens;
            new tokens per second.

    python bench/bench.py {train,forward,generate} --shape {mini,small,base} [--steps N] [--threads T]
                          [--device {cpu,cuda}] [--dtype {f32,bf16,int8}] [--freeze {course,recommended,lora}]
                          [--gradient-checkpointing]

bf16: inference with the weights in bf16 (`model.to(torch.bfloat16)`, as
`from_pretrained(..., dtype=torch.bfloat16)`); training with f32 weights and
the forward pass under `torch.autocast(dtype=torch.bfloat16)`, as the
Trainer's `bf16=True`. int8 (forward and generate): PyTorch's dynamic
quantisation, `torch.ao.quantization.quantize_dynamic(model, {nn.Linear},
qint8)`, its fastest int8 CPU path for a transformers model; GPT-2's
projections are `Conv1D`, not `nn.Linear`, so only the head converts.

Prints one JSON object (tokens_per_second, seconds, peak_rss_mb, and on CUDA
device_peak_mb: the caching allocator's peak reservation,
`max_memory_reserved`, the counterpart of what cubecl's pools hold on our side).
"""
import argparse
import contextlib
import json
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel, get_linear_schedule_with_warmup

NEW_ROWS = 1000  # wte rows that train under --freeze recommended (as `tp06 bench-one`)
SHAPES = {
    "mini": dict(n_layer=4, n_head=4, n_embd=256, n_positions=512, vocab_size=8000),
    "small": dict(n_layer=12, n_head=12, n_embd=768, n_positions=1024, vocab_size=50000),
    "base": dict(n_layer=24, n_head=14, n_embd=1792, n_positions=1024, vocab_size=50000),
}
# Too large for a whole warm-up step on a few cores: training warms up with one
# micro-batch (as `tp06 bench-one`; `tp06 bench` also measures one step there).
LARGE = {"base"}


def peak_rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


p = argparse.ArgumentParser()
p.add_argument("work", choices=["train", "forward", "generate"])
p.add_argument("--shape", choices=SHAPES, default="mini")
p.add_argument("--steps", type=int, default=2)
p.add_argument("--threads", type=int, default=2)
p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
p.add_argument("--dtype", choices=["f32", "bf16", "int8"], default="f32")
p.add_argument("--freeze", choices=["course", "recommended", "lora"], default="course")
# --freeze lora: the adapters (`tp06 bench` passes the lora preset's [model.lora]).
p.add_argument("--lora-r", type=int, default=16)
p.add_argument("--lora-alpha", type=float, default=32.0)
p.add_argument("--lora-dropout", type=float, default=0.05)
p.add_argument("--lora-targets", default="c_attn,attn.c_proj,c_fc,mlp.c_proj")
# The training loop's values (forward: one step's micro-batches); `tp06 bench`
# passes those of the tp06 preset's [train] (the defaults are the same: the course's).
p.add_argument("--batch-size", type=int, default=2)
p.add_argument("--grad-accum", type=int, default=8)
p.add_argument("--max-length", type=int, default=256)
p.add_argument("--lr", type=float, default=5e-5)
p.add_argument("--warmup-steps", type=int, default=100)
p.add_argument("--weight-decay", type=float, default=0.01)
p.add_argument("--adam-beta1", type=float, default=0.9)
p.add_argument("--adam-beta2", type=float, default=0.999)
p.add_argument("--adam-epsilon", type=float, default=1e-8)
p.add_argument("--max-grad-norm", type=float, default=1.0)
# Activation checkpointing per block (train): transformers' own.
p.add_argument("--gradient-checkpointing", action="store_true")
a = p.parse_args()
torch.set_num_threads(a.threads)
torch.manual_seed(0)
device = torch.device(a.device)
if a.device == "cuda" and not torch.cuda.is_available():
    raise SystemExit("bench.py: --device cuda, but this torch sees no CUDA device")
config = GPT2Config(**SHAPES[a.shape], bos_token_id=0, eos_token_id=2, pad_token_id=1)
model = GPT2LMHeadModel(config).to(device)
vocab = config.vocab_size
bf16 = a.dtype == "bf16"
if bf16 and a.work != "train":
    model = model.to(torch.bfloat16)
autocast = torch.autocast(a.device, dtype=torch.bfloat16) if bf16 and a.work == "train" else contextlib.nullcontext()
if a.dtype == "int8":
    if a.work == "train" or a.device != "cpu":
        raise SystemExit("bench.py: --dtype int8 is PyTorch's dynamic quantisation: forward and generate on the CPU")
    model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def sync():
    """Waits for the device's queued work, so that the clock measures it."""
    if a.device == "cuda":
        torch.cuda.synchronize()


def randint(*shape):
    return torch.randint(5, vocab, shape).to(device)

if a.work == "train" and a.freeze == "lora":
    from peft import LoraConfig, get_peft_model
    # Names as peft matches them: the end of a module's path after a dot.
    targets = ["mlp.c_fc" if t == "c_fc" else t for t in a.lora_targets.split(",")]
    lora = LoraConfig(r=a.lora_r, lora_alpha=a.lora_alpha, lora_dropout=a.lora_dropout, target_modules=targets,
                      trainable_token_indices={"wte": list(range(vocab - NEW_ROWS, vocab))}, task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    restore = lambda: None
elif a.work == "train":
    for p_ in list(model.transformer.wte.parameters()) + list(model.transformer.wpe.parameters()):
        p_.requires_grad = False
    for block in model.transformer.h[: config.n_layer // 2]:
        for p_ in block.parameters():
            p_.requires_grad = False
    restore = lambda: None
    if a.freeze == "recommended":
        wte = model.transformer.wte.weight
        base = vocab - NEW_ROWS
        pretrained = wte.detach()[:base].clone()
        wte.requires_grad = True
        wte.register_hook(lambda g: torch.cat([torch.zeros_like(g[:base]), g[base:]]))

        def restore():
            with torch.no_grad():
                wte[:base] = pretrained
if a.work == "train":
    params = [(n, p_) for n, p_ in model.named_parameters() if p_.requires_grad]
    decay = [p_ for n, p_ in params if not ("bias" in n or "ln_" in n)]
    no_decay = [p_ for n, p_ in params if "bias" in n or "ln_" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": a.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=a.lr, betas=(a.adam_beta1, a.adam_beta2), eps=a.adam_epsilon)
    schedule = get_linear_schedule_with_warmup(optimizer, a.warmup_steps, 1000)  # as our side: 1,000 steps in all
    if a.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    model.train()
    batch, accumulation, length = a.batch_size, a.grad_accum, a.max_length

    def step(accumulation):
        micro = [randint(batch, length) for _ in range(accumulation)]
        items = sum(m.numel() for m in micro)
        for ids in micro:
            with autocast:
                loss = model(input_ids=ids, labels=ids).loss * (ids.numel() / items)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), a.max_grad_norm)
        optimizer.step()
        restore()
        schedule.step()
        optimizer.zero_grad()

    step(1 if a.shape in LARGE else accumulation)  # warm-up
    sync()
    start = time.perf_counter()
    for _ in range(a.steps):
        step(accumulation)
    sync()
    seconds = time.perf_counter() - start
    tokens = a.steps * accumulation * batch * length
elif a.work == "forward":
    model.eval()
    batch, micro, length = a.batch_size, a.grad_accum, a.max_length
    batches = [randint(batch, length) for _ in range(micro)]
    with torch.no_grad():
        model(input_ids=batches[0]).logits
        sync()
        start = time.perf_counter()
        for _ in range(a.steps):
            for ids in batches:
                model(input_ids=ids).logits
        sync()
        seconds = time.perf_counter() - start
    tokens = a.steps * micro * batch * length
else:
    model.eval()
    prompt = randint(1, 16)
    with torch.no_grad():
        model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=8, eos_token_id=None, pad_token_id=1)
        sync()
        start = time.perf_counter()
        for _ in range(a.steps):
            model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=128, min_new_tokens=128, eos_token_id=None, pad_token_id=1)
        sync()
        seconds = time.perf_counter() - start
    tokens = a.steps * 128

device_peak_mb = torch.cuda.max_memory_reserved() / 2**20 if a.device == "cuda" else None
print(json.dumps({"side": "pytorch", "work": a.work, "shape": a.shape, "threads": a.threads, "tokens": tokens,
                  "seconds": seconds, "tokens_per_second": tokens / seconds, "peak_rss_mb": peak_rss_mb(),
                  "device": a.device, "dtype": a.dtype, "device_peak_mb": device_peak_mb,
                  "torch": torch.__version__,
                  **({"freeze": a.freeze, "gradient_checkpointing": a.gradient_checkpointing} if a.work == "train" else {})}))
