#!/usr/bin/env bash
# Mutation testing of the numerics with cargo-mutants: each mutant is a small
# change to the code (an operator flipped, a constant changed, a function
# body replaced by a default); a mutant the tests do not fail on ("missed")
# is a change a real bug could make without anyone noticing.
#
#   cargo install --locked cargo-mutants
#   bench/mutants.sh [MINUTES] [FILE...]
#
# MINUTES (default 120) bounds the whole run; FILE... (default: the numerics
# below) limits it to some files; MUTANTS_ARGS adds cargo-mutants options, e.g.
# `--cargo-arg=--config=profile.dev.package.tp06-model.opt-level=1` to build
# the model crate's mutants faster (its tests are tiny). Each mutant is built and tested in place in
# a copy of the working tree under target/mutants/tree (this checkout is never
# mutated), with target/mutants/target as its build directory (or
# MUTANTS_TARGET_DIR: a copy of a warm target/ saves the cold first build). Each mutant runs the tests of the
# crate it is in. Results land in target/mutants/out/mutants.out/
# (missed.txt, caught.txt, timeout.txt, unviable.txt, outcomes.json), written
# as they come, so a run cut by its time limit keeps what it found; the next
# run goes on from there (`--iterate`: the mutants already caught are not
# tried again), so a set larger than one budget is covered by running the
# script again. Not part of CI: on 2 cores the whole set takes hours.
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-120}
shift || true
files=("$@")
if [[ ${#files[@]} -eq 0 ]]; then
    files=(
        crates/model/src/gpt2.rs crates/model/src/config.rs crates/model/src/weights.rs crates/model/src/init.rs
        crates/train/src/optim.rs crates/train/src/trainer.rs crates/train/src/examples.rs
        crates/sample/src/processors.rs
    )
fi
if ! cargo mutants --version >/dev/null 2>&1; then
    echo "bench/mutants.sh: cargo-mutants is not installed: cargo install --locked cargo-mutants" >&2
    exit 1
fi

work=target/mutants
mkdir -p "$work/out"
# A copy of the working tree (tracked and untracked files, not target/).
rm -rf "$work/tree"
mkdir -p "$work/tree"
git ls-files -z --cached --others --exclude-standard --deduplicate |
    while IFS= read -r -d '' f; do [[ -e $f ]] && printf '%s\0' "$f"; done |
    xargs -0 cp --parents -t "$work/tree"
args=()
for f in "${files[@]}"; do args+=(--file "$f"); done

echo "mutants of ${#files[@]} files, at most $minutes min; results in $work/out/mutants.out" >&2
cd "$work/tree"
export CARGO_TARGET_DIR="${MUTANTS_TARGET_DIR:-$PWD/../target}"
status=0
timeout --signal=INT --kill-after=60 "$((minutes * 60))" \
    cargo mutants --workspace --in-place --no-shuffle --iterate --timeout-multiplier 3 --output ../out "${args[@]}" \
    ${MUTANTS_ARGS:-} || status=$?
[[ -d ../out/mutants.out ]] || { echo "bench/mutants.sh: cargo-mutants wrote no results (exit $status)" >&2; exit "$status"; }
cd ../out/mutants.out
for kind in caught missed timeout unviable; do
    printf '%-9s %s\n' "$kind" "$( [[ -f $kind.txt ]] && wc -l < "$kind.txt" || echo 0)"
done
if [[ -s missed.txt ]]; then
    echo "missed (each needs a test that kills it, or a reason it is equivalent):"
    cat missed.txt
fi
# cargo-mutants exits 2 when mutants were missed, 3 on timeouts; 124 is our time limit.
exit "$status"
