#!/usr/bin/env bash
# GPU check: the project's GPU path on a machine with one CUDA GPU, in about 8 minutes.
#
#   bash benchmarks/gpu_check.sh            # from the repository root, after `make install`
#
# Runs, with HF_HUB_OFFLINE=1 and a fresh cache folder under build/gpu_check/:
#   1. benchmarks/bench_extract.py --device cuda: hh.embed.extract (float16 autocast, channels-last,
#      decoding workers) against the model's forward pass on preloaded batches and a naive loop
#   2. chapter 2 (extract embeddings) under the book profile with DEVICE=cuda (papermill)
#   3. one epoch of `python -m habitat_helpers align --device cuda` on chapter 2's embeddings
#   4. chapters 3 and 4 under the book profile with DEVICE=cuda (papermill)
#   5. benchmarks/bench_scale.py --quick and benchmarks/bench_tiles.py --quick with --device cuda
# Each step has its own time limit; its output goes to build/gpu_check/<step>.log. The last line
# printed is one line of name=value results (benchmarks/README.md, "GPU check", says what to record).
# Settings: PYTHON (default .venv/bin/python), SEED (0), NUM_WORKERS (decoding workers, default
# the CPU count up to 8), GPU_CHECK_OUT (build/gpu_check).
set -euo pipefail
cd "$(dirname "$0")/.."

export HF_HUB_OFFLINE=1
PY=${PYTHON:-.venv/bin/python}
SEED=${SEED:-0}
CPUS=$(nproc 2>/dev/null || echo 2)
NUM_WORKERS=${NUM_WORKERS:-$(( CPUS < 8 ? CPUS : 8 ))}
OUT=${GPU_CHECK_OUT:-build/gpu_check}

fail() { echo "gpu_check: $1" >&2; exit "${2:-1}"; }

[ -x "$PY" ] || fail "no Python at $PY: run \`make install\` first, or set PYTHON"

# --- before anything runs: a GPU, and the options this script uses -----------------------------
if ! gpu=$("$PY" -c 'import sys, torch
if not torch.cuda.is_available():
    sys.exit(3)
print(torch.cuda.get_device_name(0))'); then
    fail "torch.cuda.is_available() is False (torch $("$PY" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo '?')): this check needs a CUDA GPU and a CUDA build of torch; nothing was run" 2
fi
"$PY" benchmarks/bench_extract.py --help | grep -q -- "--device" \
    || fail "benchmarks/bench_extract.py has no --device option: it cannot run on the GPU"
"$PY" -m habitat_helpers align --help | grep -q -- "--device" || fail "habitat_helpers align has no --device option"
"$PY" -m papermill --help >/dev/null || fail "papermill is not installed in $PY's environment"
for nb in 02_extract_embeddings 03_contrastive_alignment 04_classify_habitats; do
    grep -q '"DEVICE = ' "notebooks/$nb.ipynb" || fail "notebooks/$nb.ipynb has no DEVICE parameter"
done

rm -rf "$OUT"
mkdir -p "$OUT/notebooks" "$OUT/outputs" "$OUT/align"
OUT=$(cd "$OUT" && pwd)
export HABITAT_HELPERS_CACHE="$OUT/cache"       # cold cache: chapter 2 really extracts on the GPU
declare -A seconds

# run NAME LIMIT_S COMMAND...: time it, keep its output in $OUT/NAME.log, stop the check on failure
run() {
    local name=$1 limit=$2 start rc=0
    shift 2
    echo "gpu_check: $name (limit ${limit} s) ..." >&2
    start=$(date +%s.%N)
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1 || rc=$?
    seconds[$name]=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    if [ "$rc" -ne 0 ]; then
        tail -n 25 "$OUT/$name.log" >&2
        [ "$rc" -eq 124 ] && fail "$name ran past its ${limit} s limit (log: $OUT/$name.log)"
        fail "$name failed with exit code $rc (log: $OUT/$name.log)"
    fi
    echo "gpu_check: $name done in ${seconds[$name]} s" >&2
}

chapter() {    # chapter NAME LIMIT_S: one notebook under the book profile on the GPU
    run "$1" "$2" "$PY" -m papermill "notebooks/$1.ipynb" "$OUT/notebooks/$1.ipynb" \
        -p PROFILE book -p SEED "$SEED" -p DEVICE cuda -p OUTPUT_DIR "$OUT/outputs/$1" \
        --cwd "$OUT/notebooks" -k python3 --no-progress-bar
}

# value KEY FILE: KEY's value in the last line of FILE (`key=value` pairs)
value() { tail -n 1 "$2" | tr ' ' '\n' | sed -n "s/^$1=//p"; }

# --- 1. extraction benchmark -------------------------------------------------------------------
run extract 180 "$PY" benchmarks/bench_extract.py --device cuda --num-workers "$NUM_WORKERS"
img_s=$(value extract_img_s "$OUT/extract.log")
vs_naive=$(value extract_vs_naive "$OUT/extract.log")
vs_forward=$(value extract_vs_forward "$OUT/extract.log")
goals=$(awk -v n="$vs_naive" -v f="$vs_forward" 'BEGIN { print (n >= 3 && f >= 0.85) ? "met" : "not_met" }')

# --- 2. chapter 2, then 3. one alignment epoch on its embeddings -------------------------------
chapter 02_extract_embeddings 240
run align_sites 120 "$PY" -c "import habitat_helpers as hh
data = hh.dataspec.load('demo', 'book', $SEED, verbose=False)
hh.datasets.write_sites(data.sites, '$OUT/align/sites.parquet')
print(data.run_dir('book', $SEED) / 'site_embeddings.npz')"
embeddings=$(tail -n 1 "$OUT/align_sites.log")
[ -f "$embeddings" ] || fail "chapter 2 left no site embeddings at $embeddings"
run align 120 "$PY" -m habitat_helpers align --embeddings "$embeddings" --sites "$OUT/align/sites.parquet" \
    --out "$OUT/align/heads.pt" --epochs 1 --seed "$SEED" --device cuda --no-progress
align_s=$("$PY" -c "import json, sys; print(json.loads(sys.argv[1])['wall_s'])" "$(tail -n 1 "$OUT/align.log")")

# --- 4. chapters 3 and 4 -----------------------------------------------------------------------
chapter 03_contrastive_alignment 240
chapter 04_classify_habitats 300

# --- 5. the scale benchmark's quick run and a tiled map, on the GPU -------------------------------
run scale 300 "$PY" benchmarks/bench_scale.py --quick --device cuda
scale_cv_s=$(value cv_s "$OUT/scale.log")
run tiles 300 "$PY" benchmarks/bench_tiles.py --quick --device cuda
map_cells_s=$(value two_workers_cells_per_s "$OUT/tiles.log")

total=0
for name in "${!seconds[@]}"; do total=$(awk -v a="$total" -v b="${seconds[$name]}" 'BEGIN { print a + b }'); done
echo "gpu=${gpu// /_} extract_images_per_s=$img_s extract_speedup_vs_naive=$vs_naive" \
     "extract_fraction_of_forward=$vs_forward extract_goals=$goals align_epoch_s=$align_s" \
     "ch02_s=${seconds[02_extract_embeddings]} ch03_s=${seconds[03_contrastive_alignment]}" \
     "ch04_s=${seconds[04_classify_habitats]} scale_quick_cv_s=$scale_cv_s map_cells_per_s=$map_cells_s" \
     "total_s=$total workers=$NUM_WORKERS"
