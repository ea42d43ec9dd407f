#!/usr/bin/env bash
# The GPU checks of issue 10 in one command (at most 8 minutes on one CUDA device), printing one table:
#   1. the GPU tests (CUDA graphs path, bf16 autocast, compile on CUDA; CPU tests of the same files too),
#   2. benchmarks/sampler.py on CUDA, cases (a) MLP 2-128-128-1 batch 1024 and (d) batch 16, 100 steps:
#      hand-written eager loop, composer eager, compile=True, graph=True (CUDA graphs), autocast=bf16,
#      and the peers when installed; GPU peak memory for 10 and 1000 steps,
#   3. the main job `composer sample "red & triangle & ~top_left" -n 64 --device cuda`, end to end, twice.
# Usage (from anywhere): bash benchmarks/gpu.sh   [PYTHON=/path/to/python] [OUT=folder]
# Targets (issue 10): graph >= 3x faster than the eager hand-written loop on (a), >= 5x on (d); main job < 1.5 s.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python
COMPOSER=$(dirname "$(command -v "$PY" 2>/dev/null || echo "$PY")")/composer
[ -x "$COMPOSER" ] || COMPOSER=composer
OUT=${OUT:-$(mktemp -d)}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to run')" || exit 1
start=$(date +%s)

echo "== 1. GPU tests" >&2
timeout 150 "$PY" -m pytest -q -rs -p no:cacheprovider tests/test_sampling_fast_paths.py \
    "tests/test_sampling_features.py" -k "cuda or graph or bf16 or compile" > "$OUT/tests.log" 2>&1
tests_rc=$?
tail -3 "$OUT/tests.log" >&2

echo "== 2. sampler benchmark on CUDA" >&2
timeout 270 "$PY" benchmarks/sampler.py --device cuda --cases ad --repeats 7 --graph --bf16 \
    --json "$OUT/sampler.json" > "$OUT/sampler.log" 2>&1
bench_rc=$?
cat "$OUT/sampler.log" >&2

echo "== 3. main job with --device cuda" >&2
main=()
for i in 1 2; do
    t0=$(date +%s.%N)
    timeout 60 "$COMPOSER" sample "red & triangle & ~top_left" -n 64 --out "$OUT/grid-cuda.png" --device cuda \
        --quiet > "$OUT/main$i.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    main+=("$("$PY" -c "print(f'{$t1 - $t0:.2f} s' if $rc == 0 else 'failed (rc $rc)')")")
done

"$PY" - "$OUT" "$tests_rc" "$bench_rc" "${main[0]}" "${main[1]}" "$start" <<'EOF'
import json, sys, time, pathlib
out, tests_rc, bench_rc, main1, main2, start = sys.argv[1:]
import torch
print(f"\n{torch.cuda.get_device_name()} | torch {torch.__version__} | results in {out}")
print(f"GPU tests: {'passed' if tests_rc == '0' else 'FAILED (rc ' + tests_rc + ')'} "
      f"({pathlib.Path(out, 'tests.log').read_text().strip().splitlines()[-1]})")
path = pathlib.Path(out, "sampler.json")
rows = json.loads(path.read_text()) if path.exists() else []
names = ["composer", "composer compile", "composer graph", "composer bf16", "ebmkit", "torchebm"]
print("| case | batch | hand-written eager (ms) | " + " | ".join(f"{n} (ms, x hand)" for n in names) + " |")
print("|---|---:|---:|" + "---:|" * len(names))
for r in rows:
    if "case" not in r:
        continue
    cells = [f"{r[n] * 1e3:.2f}, {r['ratio ' + n]:.3f} ({1 / r['ratio ' + n]:.1f}x faster)" if n in r else "-"
             for n in names]
    print(f"| ({r['case']}) | {r['batch']} | {r['hand-written'] * 1e3:.2f} | " + " | ".join(cells) + " |")
for r in rows:
    if "memory" in r:
        print(f"GPU peak allocated, {r['memory']}: 10 steps {r['steps10_mib']:.1f} MiB, "
              f"1000 steps {r['steps1000_mib']:.1f} MiB")
if bench_rc != "0":
    print(f"sampler benchmark: FAILED or timed out (rc {bench_rc}); see {out}/sampler.log")
print(f"main job --device cuda, end to end: run 1 {main1}, run 2 {main2}")
print(f"total {time.time() - float(start):.0f} s")
EOF
