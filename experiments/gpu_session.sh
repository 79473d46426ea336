#!/usr/bin/env bash
# Issue #19's GPU figures in one prepared session on a lent NVIDIA H200 (the `run` tool).
#
# The plan. The device machine has torch 2.11 (python3, Python 3.12) but no internet and no pip
# index, and each `run` call carries at most 64 MiB: the tracked tree (~27 MiB) plus the ignored
# paths named in `carry`. So everything the benchmarks need is staged here first, in ignored
# folders, and sent over a few calls:
#   .whl/             the py3.12 manylinux wheels of kornia, kornia_rs, torch-optimizer and
#                     pytorch-ranger, at the venv's versions (not on that machine; the two
#                     benchmarks import none of them: insurance; WHEELS=0 drops them, 5 calls not 6);
#   .gpudata/         mnist.npz (11 MB), cifar10.parts (each part's size and sha256, and the whole
#                     file's), PLAN.txt (the call sequence below);
#   .gpudata-cifar/   cifar10.npz (170 MB, already deflated, so it does not compress) in parts.
# Ignored files carried by one call stay on a warm machine, so the part calls leave their parts
# there, and the last call carries the last part with .whl and .gpudata, reassembles cifar10.npz,
# checks its sha256 and runs the benchmarks, each under its own timeout, inside one budget.
#
# Device time: 15 minutes per session, all calls together, counted from the first call's machine
# start (1-2 min) to the give-back, idle gaps included. The machine goes back 30 s after a call
# ends, taking the parts with it: make the calls one right after the other, and give_back at once
# after the last. Budget: ~2 min start + 4-5 part calls of ~15-25 s + the run call (GPU_BUDGET_S,
# 540 s) = ~13 min, so there is no time for a second full run: a rerun after an early failure
# goes with a smaller GPU_BUDGET_S. Steps, cheapest and most telling first, each capped (CAP_*):
# many runs at once; MNIST `fast`; CIFAR-10 `fast` (only with a verified cifar10.npz); the MNIST
# final's own recipe (SAM, 30 epochs), merged into the same time-to-accuracy JSON.
#
#   bash experiments/gpu_session.sh prepare   # HERE (pip reaches PyPI): stage, print the calls
#   bash experiments/gpu_session.sh part N [SIZE SHA256]   # device: confirm part N arrived
#   bash experiments/gpu_session.sh run       # device: the benchmarks, results into $OUT
#   bash experiments/gpu_session.sh smoke     # HERE: the `run` path shortened, on one CPU thread
#
# $OUT (what comes back: at most 8 files) gets env.txt, one log per step, summary.txt,
# many-runs-<gpu>.json and time-to-accuracy-gpu.json; the two JSON files keep the names the
# benchmarks' docs use, to be copied into experiments/results/ unchanged.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

WHL=.whl
GPUDATA=.gpudata
PARTS_DIR=.gpudata-cifar
MANIFEST=$GPUDATA/cifar10.parts
PLAN=$GPUDATA/PLAN.txt
SHARED_DATA=${SHARED_DATA:-$ROOT/../shared/data}  # read only: never written
# The venv's versions (checked against `pip show` in prepare), and what kornia needs beyond them
# that the device image already has (kornia 0.9.0's Requires-Dist: kornia-rs, numpy, torch).
WHEELS_PINNED=(kornia==0.9.0 kornia_rs==0.2.0 torch-optimizer==0.3.0 pytorch-ranger==0.1.1)
ON_DEVICE="torch numpy packaging"
LIMIT_BYTES=$((64 * 1048576))                          # one call's working tree, carried paths included
MARGIN_BYTES=$(( ${GPU_TREE_MARGIN_MIB:-2} * 1048576 ))  # room for the tree to grow before the calls

# Seconds per step (a cap; the budget's deadline trims the later ones), cheapest and most
# telling first; the MNIST final's own recipe (SAM, 30 epochs) is the longest and runs last.
BUDGET_S=${GPU_BUDGET_S:-540}
CAP_MANY_RUNS=110
CAP_MNIST_FAST=80
CAP_CIFAR_FAST=140
CAP_MNIST_FINAL=320
RESERVE_S=10   # kept for the summary at the end
MIN_STEP_S=25  # a step given less would only spend CUDA's start-up

die() { echo "gpu_session: $*" >&2; exit 1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }
size_of() { stat -c %s "$1"; }
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
dir_bytes() { if [[ -e $1 ]]; then du -sb "$1" | cut -f1; else echo 0; fi; }

# What every call sends besides its carry: tracked files and untracked files git does not ignore.
tree_bytes() {
  git ls-files -z --cached --others --exclude-standard | "$PY" -c '
import os, sys
print(sum(os.path.getsize(p) for p in sys.stdin.buffer.read().decode().split("\0") if p and os.path.isfile(p)))'
}

# --- prepare (here) -------------------------------------------------------------------------

exclude_staging() {
  local exclude line
  exclude=$(git rev-parse --git-path info/exclude)
  mkdir -p "$(dirname "$exclude")"
  touch "$exclude"
  for line in "/$WHL/" "/$GPUDATA/" "/$PARTS_DIR/"; do
    grep -qxF "$line" "$exclude" || echo "$line" >>"$exclude"
  done
}

download_wheels() {
  local spec name want have tmp f
  for spec in "${WHEELS_PINNED[@]}"; do  # the pins must be what the venv runs, or stop here
    name=${spec%%==*} want=${spec#*==}
    have=$("$PY" -m pip show "$name" 2>/dev/null | awk '/^Version:/ { print $2 }')
    [[ $have == "$want" ]] || die "the venv has $name ${have:-(none)}, the script pins $want: update WHEELS_PINNED"
  done
  tmp=$(mktemp -d)
  # Every manylinux tag pip must match exactly; kornia_rs ships manylinux_2_17 for cp312.
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$tmp" "${WHEELS_PINNED[@]}" 2>&1 |
    grep -v "is ignored: it is neither a file nor a directory" || true
  [[ $(ls "$tmp"/*.whl 2>/dev/null | wc -l) -eq ${#WHEELS_PINNED[@]} ]] || die "pip download did not fetch ${#WHEELS_PINNED[@]} wheels"
  rm -rf "$WHL" && mv "$tmp" "$WHL"  # one version of each: two would stop the install there
  # Needs (Requires-Dist, extras aside) must be among the wheels or already on the device.
  "$PY" - "$WHL" "$ON_DEVICE" <<'EOF'
import pathlib, re, sys, zipfile
wheels, known = sorted(pathlib.Path(sys.argv[1]).glob("*.whl")), set(sys.argv[2].split())
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
known |= {norm(w.name.split("-")[0]) for w in wheels}
for w in wheels:
    with zipfile.ZipFile(w) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    deps = [norm(re.match(r"[A-Za-z0-9_.-]+", l.split(":", 1)[1].strip()).group())
            for l in meta.splitlines() if l.startswith("Requires-Dist:") and "extra ==" not in l]
    missing = [d for d in deps if d not in known]
    print(f"  {w.name} ({w.stat().st_size:,} bytes), needs: {', '.join(deps) or 'nothing'}")
    if missing:
        sys.exit(f"gpu_session: {w.name} needs {', '.join(missing)}: neither carried nor on the device")
EOF
}

split_cifar() {  # $1: bytes each call may carry beyond the tree
  local room=$1 src=$SHARED_DATA/cifar10.npz total extra calls load part_bytes name
  [[ -f $src ]] || die "no $src"
  total=$(size_of "$src")
  # The last call also carries .whl and .gpudata; spread the bytes evenly over the fewest calls.
  extra=$(( $(dir_bytes "$WHL") + $(dir_bytes "$GPUDATA") + 4096 ))
  calls=$(( (total + extra + room - 1) / room ))
  load=$(( (total + extra + calls - 1) / calls ))
  part_bytes=$(( (load + 1023) / 1024 * 1024 ))
  rm -rf "$PARTS_DIR" && mkdir -p "$PARTS_DIR"
  split -b "$part_bytes" -d -a 2 "$src" "$PARTS_DIR/part"
  : >"$MANIFEST.tmp"
  for name in "$PARTS_DIR"/part*; do
    echo "$(basename "$name") $(size_of "$name") $(sha_of "$name")" >>"$MANIFEST.tmp"
  done
  echo "cifar10.npz $total $(sha_of "$src")" >>"$MANIFEST.tmp"
  mv "$MANIFEST.tmp" "$MANIFEST"
}

print_plan() {  # $1: the tree's bytes; writes the call sequence to $PLAN too
  local tree=$1 parts=() lines=() name size sha k n last_name last_size carry_last calls run_bytes carry
  while read -r name size sha; do
    [[ $name == part* ]] && parts+=("$name $size $sha")
  done <"$MANIFEST"
  run_bytes=$(( tree + $(dir_bytes "$WHL") + $(dir_bytes "$GPUDATA") ))
  # The last part goes with the run call if it fits there; else it gets a call of its own.
  read -r last_name last_size sha <<<"${parts[${#parts[@]} - 1]}"
  carry_last=$(( run_bytes + last_size <= LIMIT_BYTES ? 1 : 0 ))
  calls=$(( ${#parts[@]} - carry_last + 1 ))
  for (( k = 0; k < ${#parts[@]} - carry_last; k++ )); do
    read -r name size sha <<<"${parts[k]}"
    (( tree + size <= LIMIT_BYTES )) || die "$name would make a call of $(mib $((tree + size))) MiB"
    n=$((k + 1))
    lines+=("call $n/$calls: run(command=\"bash experiments/gpu_session.sh part $k $size $sha\", carry=[\"$PARTS_DIR/$name\"], timeout_s=30)   # travels $(mib $((tree + size))) MiB")
  done
  carry="[\"$GPUDATA\""
  [[ -d $WHL ]] && carry="[\"$WHL\", \"$GPUDATA\""
  if (( carry_last )); then
    carry+=", \"$PARTS_DIR/$last_name\"" run_bytes=$((run_bytes + last_size))
  fi
  (( run_bytes <= LIMIT_BYTES )) || die "the run call would carry $(mib "$run_bytes") MiB"
  lines+=("call $calls/$calls: run(command=\"bash experiments/gpu_session.sh run\", carry=$carry], timeout_s=$((BUDGET_S + 30)))   # travels $(mib "$run_bytes") MiB")
  lines+=("then at once: give_back()")
  {
    echo "The device calls, one right after the other (the machine goes back 30 s after a call, and"
    echo "the parts with it). A part call that reports a bad size or sha256: repeat that call at once."
    echo "Every call sends the working tree ($(mib "$tree") MiB now) plus its carry; the limit is 64 MiB."
    printf '%s\n' "${lines[@]}"
  } | tee "$PLAN"
}

prepare() {
  PY=${PYTHON:-$ROOT/.venv/bin/python}
  [[ -x $PY ]] || PY=python3
  exclude_staging
  echo "wheels into $WHL/ (py3.12, manylinux x86_64):"
  if [[ ${WHEELS:-1} == 1 ]]; then download_wheels; else rm -rf "$WHL"; echo "  none (WHEELS=0)"; fi
  mkdir -p "$GPUDATA"
  cp "$SHARED_DATA/mnist.npz" "$GPUDATA/mnist.npz"
  chmod u+w "$GPUDATA/mnist.npz"  # the shared copy is read-only; ours may be replaced by a rerun
  local tree room
  tree=$(tree_bytes)
  room=$(( LIMIT_BYTES - tree - MARGIN_BYTES ))
  (( room > 8 * 1048576 )) || die "the tree alone is $(mib "$tree") MiB: too little room under 64 MiB for the data"
  split_cifar "$room"
  echo "staged: $WHL $(mib "$(dir_bytes "$WHL")") MiB, $GPUDATA $(mib "$(dir_bytes "$GPUDATA")") MiB," \
       "$PARTS_DIR $(mib "$(dir_bytes "$PARTS_DIR")") MiB in $(grep -c '^part' "$MANIFEST") parts; tree $(mib "$tree") MiB"
  echo
  print_plan "$tree"
}

# --- part N (device) ------------------------------------------------------------------------

part() {
  local k=${1:?part N [SIZE SHA256]} want_size=${2:-} want_sha=${3:-} file size sha here
  file=$PARTS_DIR/part$(printf %02d "$k")
  [[ -f $file ]] || die "$file did not arrive (was it named in carry?)"
  size=$(size_of "$file")
  sha=$(sha_of "$file")
  here=$(cd "$PARTS_DIR" && ls part* | tr '\n' ' ')
  echo "$file arrived: $size bytes, sha256 $sha; parts on this machine now: $here"
  [[ -z $want_size || $size == "$want_size" ]] || die "$file has $size bytes, expected $want_size: repeat this call"
  [[ -z $want_sha || $sha == "$want_sha" ]] || die "$file's sha256 differs from the one made by prepare: repeat this call"
  echo "part $k ok"
}

# --- run (device) and smoke (here) ----------------------------------------------------------

note() { echo "$*" | tee -a "$OUT/env.txt"; }

install_wheels() {
  if [[ $SMOKE == 1 ]]; then note "wheels: install skipped (smoke: the venv has them)"; return; fi
  if ! ls "$WHL"/*.whl >/dev/null 2>&1; then note "wheels: none carried; kornia/torch-optimizer unavailable (the benchmarks do not import them)"; return; fi
  if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$WHL"/*.whl >>"$OUT/env.txt" 2>&1; then
    note "wheels: installed $(cd "$WHL" && ls *.whl | tr '\n' ' ')into /tmp/site"
  else
    note "wheels: install FAILED (see above); the benchmarks do not import them, going on"
  fi
}

# $DATA/mnist.npz and, when every part is here and the whole matches its sha256, $DATA/cifar10.npz.
stage_data() {
  mkdir -p "$DATA"
  if [[ -f $GPUDATA/mnist.npz ]]; then ln -sf "$ROOT/$GPUDATA/mnist.npz" "$DATA/mnist.npz"
  elif [[ $SMOKE == 1 && -f $SHARED_DATA/mnist.npz ]]; then ln -sf "$SHARED_DATA/mnist.npz" "$DATA/mnist.npz"
  fi
  if [[ -f $DATA/mnist.npz ]]; then HAVE_MNIST=1; note "mnist: $DATA/mnist.npz"
  else HAVE_MNIST=0; note "mnist: MISSING ($GPUDATA/mnist.npz not carried); the MNIST steps are skipped"; fi

  HAVE_CIFAR=0
  if [[ ! -f $MANIFEST ]]; then
    if [[ $SMOKE == 1 && -f $SHARED_DATA/cifar10.npz ]]; then
      ln -sf "$SHARED_DATA/cifar10.npz" "$DATA/cifar10.npz"; HAVE_CIFAR=1; note "cifar10: the shared copy (no parts staged)"
    else note "cifar10: no $MANIFEST carried; the CIFAR-10 step is skipped"; fi
    return
  fi
  local name size sha missing=() parts=() want_size want_sha
  while read -r name size sha; do
    if [[ $name == part* ]]; then
      parts+=("$PARTS_DIR/$name")
      [[ -f $PARTS_DIR/$name && $(size_of "$PARTS_DIR/$name") == "$size" ]] || missing+=("$name")
    else want_size=$size want_sha=$sha; fi
  done <"$MANIFEST"
  if (( ${#missing[@]} )); then
    note "cifar10: parts missing or short on this machine: ${missing[*]} (a part call failed, or the machine"
    note "  went back between calls); the CIFAR-10 step is SKIPPED"
    return
  fi
  cat "${parts[@]}" >"$DATA/cifar10.npz.part"
  if [[ $(size_of "$DATA/cifar10.npz.part") == "$want_size" && $(sha_of "$DATA/cifar10.npz.part") == "$want_sha" ]]; then
    mv "$DATA/cifar10.npz.part" "$DATA/cifar10.npz"; HAVE_CIFAR=1
    note "cifar10: reassembled from ${#parts[@]} parts, sha256 ok"
  else
    rm -f "$DATA/cifar10.npz.part"
    note "cifar10: the reassembled file's sha256 does NOT match; the CIFAR-10 step is SKIPPED"
  fi
}

write_env() {
  {
    echo "date: $(date -u +%FT%TZ)  host: $(uname -srm)  mode: $MODE  budget: ${BUDGET_S}s"
    if command -v nvidia-smi >/dev/null; then
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,utilization.gpu --format=csv || true
      nvidia-smi || true
    else echo "nvidia-smi: not on this machine"; fi
    "$PY" -c 'import sys, torch; print("python", sys.version.split()[0], "| torch", torch.__version__, "| cuda", torch.version.cuda,
"| cudnn", torch.backends.cudnn.version(), "| gpu", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")' || true
  } >>"$OUT/env.txt" 2>&1
}

# step NAME CAP_S CMD...: CMD under its own timeout (the cap, or what the budget has left),
# its output in $OUT/NAME.log, one summary line.
step() {
  local name=$1 cap=$2; shift 2
  local left=$(( DEADLINE - SECONDS - RESERVE_S ))
  local limit=$(( cap < left ? cap : left ))
  local log=$OUT/$name.log t0=$SECONDS rc=0 status
  if (( limit < MIN_STEP_S )); then
    SUMMARY+=("$name: SKIPPED, ${left}s of the ${BUDGET_S}s budget left"); return 0
  fi
  echo "=== $name (timeout ${limit}s, $((SECONDS - START))s into the run): $*" | tee "$log"
  timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$log" || rc=$?
  case $rc in
    0) status=ok ;;
    124 | 137) status="TIMED OUT at ${limit}s" ;;
    *) status="FAILED (exit $rc)" ;;
  esac
  SUMMARY+=("$name: $status, $((SECONDS - t0))s; $(figures "$name" "$log" | tr '\n' ' ')")
}

skip() { SUMMARY+=("$1: SKIPPED ($2)"); }

# The issue's figures out of a step's log (many runs: its per-N rows) or the time-to-accuracy JSON.
figures() {
  "$PY" - "$1" "$2" "$TTA_JSON" 2>/dev/null <<'EOF' || echo "(no figures: see the log)"
import json, sys
step, log, tta = sys.argv[1:4]
if step == "many_runs":
    rows = [json.loads(l) for l in open(log) if l.startswith('{"copies"')]
    if not rows:
        sys.exit("no rows")
    best = max(rows, key=lambda r: r["array_images_per_s"])
    at32 = [r for r in rows if r["copies"] >= 32]
    print(" | ".join(f'{r["copies"]} copies: {r["array_images_per_s"]:,.0f} img/s ({r["array_over_separate"]}x separate)'
                     for r in rows),
          f'| best {best["copies"]} copies; target >= 32 runs at once: {"run" if at32 else "NOT run"}')
else:
    dataset, contestant = step.split("_", 1)
    contestant = {"fast": "tinycnn_fast", "final": "tinycnn"}[contestant]
    limits = {"mnist": {"0.992": 5}, "cifar10": {"0.860": 5, "0.900": 15}}[dataset]
    d = json.load(open(tta))["datasets"][dataset]["contestants"][contestant]
    parts = []
    for t, hit in d["time_to"].items():
        goal = f" (target <= {limits[t]} s: {'met' if hit and hit['train_time_s'] <= limits[t] else 'missed'})" if t in limits else ""
        parts.append(f"{float(t):.1%} " + (f"at epoch {hit['epoch']}, {hit['train_time_s']:.1f} s" if hit else "not reached") + goal)
    print(f"{dataset} {contestant}: " + ", ".join(parts) +
          f"; {d['epochs']} epochs in {d['train_time_s']} s, final val {d['final_val_acc']:.2%}, test {d['test_acc']:.2%}")
EOF
}

run_benchmarks() {
  START=$SECONDS DEADLINE=$((SECONDS + BUDGET_S)) SUMMARY=()
  mkdir -p "$OUT"
  : >"$OUT/env.txt"
  install_wheels
  export PYTHONPATH=/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH} TINYCNN_DATA=$DATA PYTHONUNBUFFERED=1
  stage_data
  write_env
  local dev=(--device "$DEVICE") many=(--copies 1 8 32 64 128 --steps 50) short=() slug
  if [[ $SMOKE == 1 ]]; then dev+=(--threads 1) many=(--copies 1 2 --steps 3 --images 512) short=(--epochs 1 --train-subset 512); fi
  # The file name the benchmark itself would pick (many-runs-<device slug>, e.g. nvidia-h200).
  slug=$("$PY" -c 'import sys, torch; sys.path.insert(0, "experiments"); from bench_many_runs import device_slug
print(device_slug(torch.device(sys.argv[1])))' "$DEVICE" 2>/dev/null) || slug=nvidia-h200
  TTA_JSON=$OUT/time-to-accuracy-gpu.json
  [[ $SMOKE == 1 ]] && TTA_JSON=$OUT/time-to-accuracy-smoke.json
  local tta=("$PY" experiments/bench_time_to_accuracy.py "${dev[@]}" --out "$TTA_JSON" ${short[@]+"${short[@]}"})

  step many_runs "$CAP_MANY_RUNS" "$PY" experiments/bench_many_runs.py "${dev[@]}" "${many[@]}" \
    --out "$OUT/many-runs-$slug.json"
  if (( HAVE_MNIST )); then step mnist_fast "$CAP_MNIST_FAST" "${tta[@]}" --dataset mnist --only tinycnn_fast
  else skip mnist_fast "no mnist.npz"; fi
  if (( HAVE_CIFAR )); then step cifar10_fast "$CAP_CIFAR_FAST" "${tta[@]}" --dataset cifar10 --only tinycnn_fast
  else skip cifar10_fast "no verified cifar10.npz: see env.txt"; fi
  # Merged into the same JSON; its seconds_over_tinycnn ratios are recomputed with it.
  if (( HAVE_MNIST )); then step mnist_final "$CAP_MNIST_FINAL" "${tta[@]}" --dataset mnist --only tinycnn
  else skip mnist_final "no mnist.npz"; fi

  rm -f "$OUT"/.*.tmp  # an atomic write cut short by a timeout; $OUT returns 8 files at most
  {
    echo "=== summary ($((SECONDS - START))s of ${BUDGET_S}s; $MODE on $DEVICE)"
    printf '%s\n' "${SUMMARY[@]}"
    echo "files: $(cd "$OUT" && ls | tr '\n' ' ')"
  } | tee "$OUT/summary.txt"
  local nfiles
  nfiles=$(find "$OUT" -type f | wc -l)
  (( nfiles <= 8 )) || echo "WARNING: $nfiles files in $OUT; only 8 come back"
}

MODE=${1:-}
case $MODE in
  prepare) prepare ;;
  part) shift; part "$@" ;;
  run)
    OUT=${OUT:?run is for the device machine, where the tool sets OUT; here use smoke}
    PY=${PYTHON:-python3} DEVICE=cuda SMOKE=0 DATA=/tmp/tinycnn-data
    run_benchmarks
    ;;
  smoke)
    PY=${PYTHON:-$ROOT/.venv/bin/python}
    export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
    OUT=$(mktemp -d /tmp/gpu-session-smoke.XXXXXX) DEVICE=cpu SMOKE=1 DATA=$OUT.data BUDGET_S=${GPU_BUDGET_S:-240}
    run_benchmarks
    rm -rf "$DATA"  # the reassembled 170 MB copy; the outputs stay
    echo "smoke output in $OUT"
    ;;
  *) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2 ;;
esac
