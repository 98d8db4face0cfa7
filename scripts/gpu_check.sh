#!/usr/bin/env bash
# The GPU checks of one session, as one run on a machine with a CUDA device:
#   scripts/gpu_check.sh [DATA_DIR]            (default: .data/scene-letters)
# Installs what the machine lacks from wheels in .whl/ (hydra-core, omegaconf, antlr4 4.9.3,
# built here with `pip wheel --no-deps antlr4-python3-runtime==4.9.3`), then runs the CUDA
# tests, the benchmark on cuda, one run and the stacked momentum table, each with a time limit.
# Everything it prints is also written to $OUT (or /tmp/gpu-check) as gpu_check.log.
set -uo pipefail
cd "$(dirname "$0")/.."
data=${1:-.data/scene-letters}
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
exec > >(tee "$out/gpu_check.log") 2>&1

if ls .whl/*.whl > /dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export LETTERS_CACHE_DIR=/tmp/letters-cache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"

echo "== CUDA tests"
timeout 300 python3 -m pytest -q -o addopts="" -p no:cacheprovider \
    tests/test_device.py tests/test_optimizers.py -k "cuda or gpu"

echo "== benchmark (cuda)"
timeout 400 python3 scripts/benchmark.py --device cuda --data "$data" --repetitions 5 \
    --skip-processes

echo "== one run of the reference recipe on the GPU"
timeout 300 /usr/bin/time -f "%e s wall" python3 -m letters.train data=list "data.root=$data" \
    trainer.accelerator=gpu trainer.enable_progress_bar=false "hydra.run.dir=$out/run"

echo "== the momentum table over three seeds as one stack on the GPU"
timeout 400 /usr/bin/time -f "%e s wall" python3 -m letters.train -m experiment=momentum_table \
    seed=1,2,3 data=list "data.root=$data" hydra/launcher=stacked trainer.accelerator=gpu \
    trainer.enable_progress_bar=false "hydra.sweep.dir=$out/table"
timeout 120 python3 -m letters.report "$out/table"
