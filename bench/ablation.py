#!/usr/bin/env python3
"""From the course's fine-tune to `recommended`, one fix at a time.

Each rung is a tp06 run (data → vocab → model → train) on the same data
settings, hence the same validation split (the `recommended` preset's: NFC
title matching, 10 % of the articles held out, seed 42), with the settings of
the rung before it plus one fix:

  course               the course's vocabulary, initialisation, freezing and loss
  pads masked          + padding out of the loss
  names as tokens      + every name one token, at text start and after a space
  new rows train       + the added rows learn, initialised to their pieces' mean
  learning rate        + the rate of a range test, warm-up 10 % of the run
  coverage             + every token: articles concatenated into blocks (run_clm)
  documents apart      + block-diagonal attention, positions restarting per article

and beside them transformers running the course's procedure on the first
rung's split (`bench/quality_reference.py`). Each row gives the held-out loss
in bits per character (the train stage's nats per character / ln 2, which
compares across tokenizers), the training time and the settings.

    cargo build --release -p tp06-cli
    python bench/ablation.py OUT_DIR [--corpus ../shared/data/pokedex-fr]
        [--base ../shared/models/gpt2-fr-mini] [--epochs 2] [--threads 2] [--no-reference]

Writes OUT_DIR/ablation.json (also into the last rung's run directory, where
the report draws it) and prints the table in Markdown. Run again on the same
OUT_DIR, the rungs already trained are up to date and only read back.
"train s" is the train stage's loop time (with `lr=find`, the range test's
100 steps come on top).
"""
import argparse
import json
import math
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent

RUNGS = [
    ("course", "the course's procedure (names at text start, reference-word init, wte frozen, pads in the loss)", [
        "vocab.add_names=course", "model.init=reference", "model.freeze.wte=all", "train.pad_in_loss=true",
        "train.lr=5e-5", "train.warmup_steps=100", "train.warmup_ratio=none", "train.packing=false",
    ]),
    ("pads masked", "train.pad_in_loss=false", ["train.pad_in_loss=false"]),
    ("names as tokens", "vocab.add_names=recommended", ["vocab.add_names=recommended"]),
    ("new rows train", "model.freeze.wte=pretrained-rows, model.init=subword-mean", [
        "model.freeze.wte=pretrained-rows", "model.init=subword-mean",
    ]),
    ("learning rate", "train.lr=find, train.warmup_ratio=0.1", [
        "train.lr=find", "train.warmup_steps=0", "train.warmup_ratio=0.1",
    ]),
    ("coverage", "train.packing=true (run_clm blocks)", ["train.packing=true"]),
    ("documents apart", "train.packing=documents", ["train.packing=documents"]),
]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--corpus", default=str(ROOT.parent / "shared/data/pokedex-fr"))
    p.add_argument("--base", default=str(ROOT.parent / "shared/models/gpt2-fr-mini"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--exe", default=str(ROOT / "target/release/tp06"))
    p.add_argument("--no-reference", action="store_true", help="skip transformers' course procedure")
    a = p.parse_args()
    out = pathlib.Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    common = [
        f"data.articles={a.corpus}/articles.parquet", f"data.names={a.corpus}/names.parquet",
        f"model.base={a.base}", f"train.epochs={a.epochs}",
    ]
    env = dict(os.environ, RAYON_NUM_THREADS=str(a.threads))
    rows, settings = [], list(common)
    for i, (name, change, sets) in enumerate(RUNGS):
        settings = [s for s in settings if s.split("=")[0] not in {x.split("=")[0] for x in sets}] + sets
        run = out / f"{i}-{name.replace(' ', '-')}"
        args = [a.exe, "pipeline", "--preset", "recommended", "--run-dir", str(run), "--to", "train"]
        for s in settings:
            args += ["--set", s]
        print(f"[{i + 1}/{len(RUNGS)}] {name}: {change}", file=sys.stderr, flush=True)
        subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL)
        stats = json.loads((run / "train" / "manifest.json").read_text())["stats"]
        rows.append({
            "rung": name,
            "change": change,
            "run_dir": str(run),
            "bits_per_char": stats["final_eval_nats_per_char"] / math.log(2),
            "base_bits_per_char": stats["base_eval_nats_per_char"] / math.log(2),
            "lr": stats.get("lr"),
            "warmup_steps": stats.get("warmup_steps"),
            "coverage": stats.get("coverage"),
            "train_examples": stats["train_examples"],
            "steps": stats["total_steps"],
            "train_seconds": stats["train_seconds"],
        })
        print(f"    {rows[-1]['bits_per_char']:.3f} bits/char, trained in {stats['train_seconds']:.0f} s",
              file=sys.stderr, flush=True)
    reference = None
    if not a.no_reference:
        print("[ref] transformers, course procedure", file=sys.stderr, flush=True)
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench/quality_reference.py"), rows[0]["run_dir"], a.base,
             "--epochs", str(a.epochs), "--threads", str(a.threads)],
            check=True, capture_output=True, text=True,
        )
        # (the Trainer prints its log records first; the result is the last object)
        ref = json.loads(done.stdout[done.stdout.rfind("{\n"):])
        reference = {
            "rung": "transformers, course procedure",
            "bits_per_char": ref["final_nats_per_char"] / math.log(2),
            "base_bits_per_char": ref["base_nats_per_char"] / math.log(2),
            "steps": ref["steps"],
            "train_seconds": ref["train_seconds"],
            "transformers": ref["transformers"],
            "torch": ref["torch"],
        }
    result = {"version": 1, "epochs": a.epochs, "threads": a.threads, "corpus": a.corpus, "base": a.base,
              "rows": rows, "reference": reference}
    text = json.dumps(result, indent=1)
    (out / "ablation.json").write_text(text)
    (pathlib.Path(rows[-1]["run_dir"]) / "ablation.json").write_text(text)
    print(markdown(result))


def markdown(result):
    ref = result["reference"]
    lines = ["| rung | change | held-out bits/char | vs transformers' course | lr | coverage | steps | train s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"] + ([ref] if ref else []):
        versus = f"{100 * (r['bits_per_char'] / ref['bits_per_char'] - 1):+.1f} %" if ref else ""
        lr = f"{r['lr']:.1e}" if r.get("lr") else "5e-5"
        coverage = f"{100 * r['coverage']:.1f} %" if r.get("coverage") is not None else ""
        lines.append(f"| {r['rung']} | {r.get('change', '')} | {r['bits_per_char']:.3f} | {versus} | {lr} | "
                     f"{coverage} | {r['steps']} | {r['train_seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
