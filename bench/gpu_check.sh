#!/usr/bin/env bash
# One command for the GPU check (bench/gpu_check.py; bench/README.md says how to run it on a lent GPU).
#   bash bench/gpu_check.sh --prepare            here, PyPI reachable: .gpu_check/ (wheels + embedder files)
#   bash bench/gpu_check.sh [--device cuda]      on the GPU machine, with .gpu_check/ carried along
#   bash bench/gpu_check.sh --device cpu --quick the CPU variant the test suite runs
# The GPU image has torch, transformers, sentence-transformers and accelerate; what real_assets.core needs
# beyond them is installed from .gpu_check/wheels into a folder of its own (no registry there).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
[ -x .venv/bin/python ] && [ -z "${VIRTUAL_ENV:-}" ] && PYTHON=.venv/bin/python
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
case " $* " in
  *" --prepare "*) exec "$PYTHON" bench/gpu_check.py "$@" ;;
esac
if ! "$PYTHON" -c "import trl, datasets" 2>/dev/null; then
  [ -d .gpu_check/wheels ] || { echo "trl/datasets missing and no .gpu_check/wheels: run --prepare first" >&2; exit 2; }
  # dill (datasets' fingerprints) pickles by value any module outside sys.prefix or a "site-packages" path,
  # and fails on pyarrow's: so the folder is named site-packages.
  site="${TMPDIR:-/tmp}/real_assets_gpu_check/site-packages"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .gpu_check/wheels/*.whl
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" bench/gpu_check.py "$@"
