#!/bin/bash
# Issue 28's metrics check on a committed study config: one combination of a committed run_config.yaml selected,
# trained and evaluated by the engine of REV (a git worktree) and by this checkout (study_metrics.py), at one thread;
# then the two dumps (the selection's sha256 and every metric) are compared. Usage, from the repository root:
#   SEED=/work/runs/committed-check/main bash bench/results/same_outputs/study_metrics.sh fdf25cc
# CONFIG, COMBO and OVERRIDES pick the config, the combination and the settings pinned on both sides (the default
# learning rate changed between them); SIDES="after" reruns this checkout's side only.
set -eu
REV=${1:?a revision to compare with}
ROOT=$(pwd); OUT=${OUT:-/tmp/study-metrics}; BEFORE=$OUT/tree-$REV
CONFIG=${CONFIG:-$ROOT/studies/smollm2-wanda50-alpaca/run_config.yaml}
COMBO=${COMBO:-paser-b0.1-s0}
OVERRIDES=${OVERRIDES:-recovery.learning_rate=2e-4}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 TOKENIZERS_PARALLELISM=false
[ -d "$BEFORE" ] || git worktree add -f "$BEFORE" "$REV" -q
source "$(dirname "$0")/shim.sh"
# The committed configs name their files relative to the repository root (../shared/data/...): each side runs from
# $OUT/cwd, outside the checkouts, beside a link $OUT/shared to the data's parent.
mkdir -p "$OUT/cwd"; ln -sfn "$(cd "${PASER_DATA_DIR:-$ROOT/../shared/data}/.." && pwd)" "$OUT/shared"
sets=(); for item in $OVERRIDES; do sets+=(--set "$item"); done
for side in ${SIDES:-before after}; do
  tree=$ROOT; [ $side = before ] && tree=$BEFORE
  path="$(shim "$tree" $side):$tree"
  start=$(date +%s)
  (cd "$OUT/cwd" && PYTHONPATH="$path" python "$ROOT/bench/results/same_outputs/study_metrics.py" --config "$CONFIG" \
      --combo "$COMBO" --out "$OUT/run-$side" --dump "$OUT/$side.json" ${SEED:+--seed-from "$SEED"} "${sets[@]}" \
      2>&1 | grep -v "^{'loss\|it/s\]\|s/it\]" | tail -5)
  echo "$side: $(( $(date +%s) - start )) s"
done
if cmp -s "$OUT/before.json" "$OUT/after.json"; then echo "identical"; else echo "DIFFER"; diff "$OUT/before.json" "$OUT/after.json" || true; fi
sha256sum "$OUT/before.json" "$OUT/after.json"
