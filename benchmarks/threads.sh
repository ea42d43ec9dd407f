#!/usr/bin/env bash
# Threads: the main job, a 100-step CD training (the README recipe, 100 steps) and a test subset, at 1 and 2
# torch threads, on the machine as it is ("idle") and with a competing 2-thread job beside it ("loaded").
# Wall seconds, one run each. Usage: bash benchmarks/threads.sh [LOADS="idle loaded"] [THREADS="1 2"]
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
V=${VENV:-$ROOT/.venv}/bin
WORK=$(mktemp -d)
cat > "$WORK/train100.py" <<'PY'
import pathlib, sys, tempfile
sys.path.insert(0, sys.argv[1] + "/tests")
from test_training import README_TOML
from composer.training import load_config, train
d = pathlib.Path(tempfile.mkdtemp())
(d / "eight.toml").write_text(README_TOML.replace("steps = 800", "steps = 100"))
cfg = load_config(d / "eight.toml")
cfg.log.image_every, cfg.log.progress = 0, False
train(cfg)
PY
secs() { local s; s=$(date +%s.%N); "$@" > /dev/null 2>&1; echo "$(date +%s.%N) - $s" | bc; }
for load in ${LOADS:-idle loaded}; do
  cpid=""
  if [ "$load" = loaded ]; then
    env -u OMP_NUM_THREADS -u MKL_NUM_THREADS "$V/python" -c "import torch
a = torch.randn(768, 768)
while True: a @ a" & cpid=$!
    sleep 3
  fi
  for n in ${THREADS:-1 2}; do
    main=$(cd "$WORK" && env -u OMP_NUM_THREADS -u MKL_NUM_THREADS COMPOSER_THREADS=$n \
           bash -c "$(declare -f secs); secs $V/composer sample 'red & triangle & ~top_left' -n 64 --out grid.png")
    tr=$(OMP_NUM_THREADS=$n MKL_NUM_THREADS=$n secs "$V/python" "$WORK/train100.py" "$ROOT")
    te=$(OMP_NUM_THREADS=$n MKL_NUM_THREADS=$n secs "$V/python" -m pytest -q -x -p no:cacheprovider \
         tests/test_sampling_kernels.py tests/test_sampling_exact.py)
    echo "$load threads=$n main=${main}s train100=${tr}s tests=${te}s"
  done
  [ -n "$cpid" ] && kill "$cpid"
done
rm -rf "$WORK"
