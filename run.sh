#!/usr/bin/env bash
# The project's two entry points; both are idempotent.
#   ./run.sh demo [VIDEO]   set up the backend and run the main job on the embedded default
#   ./run.sh test [ARGS]    set up the environments and run the whole test suite, with the
#                           Blender version matrix (bpy 4.2, 4.5, 5.2 beside 5.0)
#   ./run.sh bench [ARGS]   set up the benchmark environment and run the fitting benchmark
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENVS="$ROOT/.venvs"

say() { printf '\033[1m[facecap]\033[0m %s\n' "$*"; }

# find_python [VERSION]: a Python VERSION (default 3.11) interpreter; FACECAP_PYTHON
# (3.11) or FACECAP_PYTHON_3_13 (and so on) name one, otherwise PATH and pyenv are searched.
find_python() {
    local version=${1:-3.11}
    local override="FACECAP_PYTHON_${version/./_}"
    [ "$version" = 3.11 ] && override=FACECAP_PYTHON
    local pyenv_pythons=()
    command -v pyenv >/dev/null 2>&1 && pyenv_pythons=("$(pyenv root)"/versions/"$version".*/bin/python"$version")
    for candidate in "${!override:-}" "python$version" python3 "${pyenv_pythons[@]}"; do
        [ -n "$candidate" ] || continue
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$version'.split('.'))))" 2>/dev/null; then
            command -v "$candidate"; return 0
        fi
    done
    echo "run.sh: Python $version is required (set $override to its path)" >&2
    return 1
}

# ensure_venv NAME REQUIREMENTS [PYTHON_VERSION]: create .venvs/NAME and install the pinned
# requirements, skipping the work when the requirements files have not changed since then.
ensure_venv() {
    local name=$1 requirements=$2 version=${3:-3.11} venv="$VENVS/$1"
    local stamp="$venv/.requirements.sha256"
    local wanted
    # -r includes are covered by hashing every requirements file.
    wanted=$(cat "$requirements" requirements/*.txt | sha256sum | cut -d' ' -f1)
    if [ -x "$venv/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$wanted" ]; then
        say "environment $name is up to date ($venv)"
        return 0
    fi
    local python
    # Explicit returns: set -e does not apply where the caller tests the status.
    python=$(find_python "$version") || return 1
    say "creating environment $name in $venv from $requirements"
    rm -rf "$venv"
    "$python" -m venv "$venv" || return 1
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip==25.3 || return 1
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements" || return 1
    echo "$wanted" >"$stamp"
    say "environment $name ready"
}

backend() { "$VENVS/backend/bin/python" -m fitter_backend "$@"; }

# The Blender version matrix beside the full run on 5.0 (requirements/blender.txt): a lean job
# per supported line PyPI's bpy offers (4.2 LTS, 4.5 LTS, the newest 5.x): install the add-on
# zip, Fit through the job functions, import the take, FBX round trip.
BLENDER_MATRIX="4.2:3.11 4.5:3.11 5.2:3.13"
BLENDER_MATRIX_TESTS="test_the_zip_installs_enables_and_fits or test_fit_a_movie_strip_imports_the_take or test_fbx_round_trip"
blender_matrix() {
    local status=0 entry line
    for entry in $BLENDER_MATRIX; do
        line=${entry%%:*}
        ensure_venv "blender-$line" "requirements/blender-$line.txt" "${entry##*:}" || { status=1; continue; }
        say "Blender $line lean job: tests/blender -k '$BLENDER_MATRIX_TESTS'"
        "$VENVS/blender-$line/bin/python" -m pytest tests/blender -rs -k "$BLENDER_MATRIX_TESTS" "$@" || status=1
    done
    return $status
}

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
        "$VENVS/bench/bin/python" -m pytest tests/test_bench.py tests/test_onnx_models.py \
            tests/test_tflite_conversion.py -rs "$@" || status=$?
        say "batch tests (real Ray, the batch environment): tests/test_batch.py"
        "$VENVS/batch/bin/python" -m pytest tests/test_batch.py -rs "$@" || status=$?
        say "Blender tests (bpy module, numpy<2): tests/blender/"
        "$VENVS/blender/bin/python" -m pytest tests/blender -rs "$@" || status=$?
        blender_matrix "$@" || status=1
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
