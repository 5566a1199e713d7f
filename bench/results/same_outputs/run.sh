#!/bin/bash
# Issue 15's "same outputs" check: the tiny `paser run` sweeps of same_outputs_check.py, run by the code of REV (a
# git worktree) and by this checkout, each dumping the sha256 of every combination's selection.jsonl and every
# metric; then the dumps are compared. Usage, from the repository root:
#   bash bench/results/same_outputs/run.sh 118ffab
# EQ_SWEEPS picks the sweeps (e.g. EQ_SWEEPS=demo, the built-in demo); SIDES="after" reruns this checkout's side only.
set -eu
REV=${1:?a revision to compare with}
ROOT=$(pwd); OUT=${OUT:-/tmp/same-outputs}; BEFORE=$OUT/tree-$REV
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
[ -d "$BEFORE" ] || git worktree add -f "$BEFORE" "$REV" -q
source "$(dirname "$0")/shim.sh"
for side in ${SIDES:-before after}; do
  tree=$ROOT; [ $side = before ] && tree=$BEFORE
  mkdir -p "$OUT/$side"
  path="$(shim "$tree" $side):$tree"
  # From $OUT, and pytest appending the tests' folder to sys.path: a checkout's paser/ first on sys.path would
  # bring the installed subpackages back.
  (cd "$OUT" && PYTHONPATH="$path" python -c 'import paser.pipelines.run as run; print("imports", run.__file__)')
  cp bench/results/same_outputs/same_outputs_check.py "$tree/tests/test_same_outputs_tmp.py"
  (cd "$OUT" && PYTHONPATH="$path" EQ_OUT="$OUT/$side" python -m pytest -q -p no:cacheprovider --import-mode=append \
      --rootdir "$tree" "$tree/tests/test_same_outputs_tmp.py" 2>&1 | tail -1)
  rm -f "$tree/tests/test_same_outputs_tmp.py"
done
for dump in "$OUT"/after/*.json; do
  name=$(basename "$dump")
  [ -e "$OUT/before/$name" ] || continue
  if cmp -s "$OUT/before/$name" "$dump"; then echo "$name: identical"; else echo "$name: DIFFERS"; fi
done
