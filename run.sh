#!/usr/bin/env bash
# The project's two entry points; both are idempotent.
#   ./run.sh demo [VIDEO]   set up the backend and run the main job on the embedded default
#   ./run.sh test [ARGS]    set up both environments and run the whole test suite
#   ./run.sh bench [ARGS]   set up the benchmark environment and run the fitting benchmark
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENVS="$ROOT/.venvs"

say() { printf '\033[1m[facecap]\033[0m %s\n' "$*"; }

find_python() {
    for candidate in "${FACECAP_PYTHON:-}" python3.11 python3; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
            command -v "$candidate"; return 0
        fi
    done
    echo "run.sh: Python 3.11 is required (set FACECAP_PYTHON to its path)" >&2
    return 1
}

# ensure_venv NAME REQUIREMENTS: create .venvs/NAME and install the pinned requirements,
# skipping the work when the requirements file has not changed since the last install.
ensure_venv() {
    local name=$1 requirements=$2 venv="$VENVS/$1"
    local stamp="$venv/.requirements.sha256"
    local wanted
    # -r includes are covered by hashing every requirements file.
    wanted=$(cat "$requirements" requirements/*.txt | sha256sum | cut -d' ' -f1)
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
        say "environment $name is up to date ($venv)"
        return 0
    fi
    local python
    python=$(find_python)
    say "creating environment $name in $venv from $requirements"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
    echo "$wanted" >"$stamp"
    say "environment $name ready"
}

backend() { "$VENVS/backend/bin/python" -m fitter_backend "$@"; }

cmd=${1:-}
shift || true
case "$cmd" in
    demo)
        ensure_venv backend requirements/backend.txt
        ensure_venv blender requirements/blender.txt
        backend setup
        backend demo "$@"
        ;;
    test)
        ensure_venv backend requirements/backend.txt
        ensure_venv blender requirements/blender.txt
        ensure_venv bench requirements/bench.txt
        ensure_venv batch requirements/batch.txt
        backend setup
        status=0
        say "backend tests (numpy 2): tests/"
        "$VENVS/backend/bin/python" -m pytest tests --ignore=tests/blender -rs "$@" || status=$?
        say "PyTorch tests (benchmark baselines, landmark networks): the bench environment"
        "$VENVS/bench/bin/python" -m pytest tests/test_bench.py tests/test_onnx_models.py -rs "$@" || status=$?
        say "batch tests (real Ray, the batch environment): tests/test_batch.py"
        "$VENVS/batch/bin/python" -m pytest tests/test_batch.py -rs "$@" || status=$?
        say "Blender tests (bpy module, numpy<2): tests/blender/"
        "$VENVS/blender/bin/python" -m pytest tests/blender -rs "$@" || status=$?
        exit $status
        ;;
    bench)
        ensure_venv bench requirements/bench.txt
        "$VENVS/bench/bin/python" -m fitter_backend setup
        "$VENVS/bench/bin/python" -m fitter_backend.bench fit "$@"
        ;;
    *)
        echo "usage: ./run.sh demo [VIDEO] | ./run.sh test [PYTEST_ARGS] | ./run.sh bench [ARGS]" >&2
        exit 2
        ;;
esac
