#!/usr/bin/env python3
"""Validate the demo corpus (stdlib only).

Usage: python3 data/demo/check.py [DIR]   (DIR defaults to this script's folder)
Exit status 0 when every check passes, 1 otherwise.
"""
import json
import os
import re
import sys
import unicodedata

ROOT = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
errors = []


def fail(msg):
    errors.append(msg)


def is_nfc(s):
    return unicodedata.normalize("NFC", s) == s


def sort_key(title):
    decomposed = unicodedata.normalize("NFD", title)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def read_text(name):
    with open(os.path.join(ROOT, name), "rb") as f:
        raw = f.read()
    if raw.startswith(b"\xef\xbb\xbf"):
        fail(f"{name}: starts with a BOM")
    if b"\r" in raw:
        fail(f"{name}: contains CR characters")
    if not raw.endswith(b"\n"):
        fail(f"{name}: no final newline")
    return raw.decode("utf-8"), len(raw)


# ---- names.txt
names_text, names_bytes = read_text("names.txt")
names = names_text.split("\n")[:-1]
for i, n in enumerate(names, 1):
    if n == "" or n != n.strip():
        fail(f"names.txt:{i}: empty line or surrounding whitespace: {n!r}")
    if not is_nfc(n):
        fail(f"names.txt:{i}: not NFC: {n!r}")
if len(set(names)) != len(names):
    fail("names.txt: duplicate names")
name_set = set(names)

# ---- articles.jsonl
arts_text, arts_bytes = read_text("articles.jsonl")
titles, contents = [], {}
for i, line in enumerate(arts_text.split("\n")[:-1], 1):
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        fail(f"articles.jsonl:{i}: bad JSON: {e}")
        continue
    if not isinstance(obj, dict) or list(obj.keys()) != ["title", "content"]:
        fail(f"articles.jsonl:{i}: keys must be exactly title, content")
        continue
    t, c = obj["title"], obj["content"]
    if not (isinstance(t, str) and isinstance(c, str)):
        fail(f"articles.jsonl:{i}: title and content must be strings")
        continue
    if not t or not c or t != t.strip() or c != c.strip():
        fail(f"articles.jsonl:{i}: empty or padded title/content: {t!r}")
    if not (is_nfc(t) and is_nfc(c)):
        fail(f"articles.jsonl:{i}: not NFC: {t!r}")
    if "\\u" in line:
        fail(f"articles.jsonl:{i}: written with ensure_ascii=True")
    if t in contents:
        fail(f"articles.jsonl:{i}: duplicate title {t!r}")
    titles.append(t)
    contents[t] = c

if titles != sorted(titles, key=lambda t: (sort_key(t), t)):
    fail("articles.jsonl: not sorted by title ignoring case and accents")

pokemon = [t for t in titles if t in name_set]
other = [t for t in titles if t not in name_set]
for t in pokemon:
    if t not in contents[t]:
        fail(f"Pokémon article {t!r} never names itself")
without_article = [n for n in names if n not in contents]

# ---- edge cases the README promises
if "Carapuce à O" not in other or "Carapuce" not in name_set:
    fail("edge case missing: item 'Carapuce à O' next to species 'Carapuce'")
if "Abo" not in name_set or "Abo" in contents:
    fail("edge case missing: 'Abo' must be a name without an article")
if not any(re.search(r"\babonnement", c, re.IGNORECASE) for c in contents.values()):
    fail("edge case missing: no article contains 'abonnement'")
for n in ["Nidoran♀", "Nidoran♂", "M. Mime", "Mime Jr.", "Type:0", "Ho-Oh",
          "Porygon-Z", "Évoli"]:
    if n not in pokemon:
        fail(f"edge case missing: Pokémon article {n!r}")
if "Élekid" not in without_article:
    fail("edge case missing: 'Élekid' as a name without an article")

# ---- counts stated in README.md
readme, _ = read_text("README.md")
stated = {m.group(1): int(m.group(2))
          for m in re.finditer(r"^\|\s*([^|]+?)\s*\|\s*(\d+)\s*\|\s*$", readme, re.M)}
actual = {
    "Pokémon articles": len(pokemon),
    "Other articles": len(other),
    "Articles in total": len(titles),
    "Names": len(names),
    "Names without an article": len(without_article),
}
for label, value in actual.items():
    if label not in stated:
        fail(f"README.md: no count for {label!r}")
    elif stated[label] != value:
        fail(f"README.md says {label} = {stated[label]}, data has {value}")

total = arts_bytes + names_bytes
if total > 80_000:
    fail(f"data too large: {total} bytes")

for label, value in actual.items():
    print(f"{label}: {value}")
print(f"articles.jsonl + names.txt: {total} bytes")
if errors:
    print(f"\n{len(errors)} problem(s):", file=sys.stderr)
    for e in errors:
        print("  " + e, file=sys.stderr)
    sys.exit(1)
print("OK")
