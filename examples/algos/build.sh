#!/bin/sh
# Build the example algos' .wasm files from their sources.
#
# You do not need this to try the examples: the built .wasm files are committed
# beside their sources. Run it after editing a source:
#
#   examples/algos/build.sh        # everything
#   examples/algos/build.sh wat    # the WAT algos only (needs Python with `wasmtime`)
#   examples/algos/build.sh as     # the AssemblyScript algos only (needs Node.js and npm)
#
# WAT is assembled by the `wasmtime` Python package (the project's .venv has it);
# AssemblyScript is compiled by the version pinned in assemblyscript/package-lock.json,
# with the options in assemblyscript/asconfig.json. Both are deterministic: running this
# again gives the same bytes, and tests/algos/test_examples.py checks the WAT ones.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
what=${1:-all}

build_wat() {
    python=${PYTHON:-}
    if [ -z "$python" ]; then
        if [ -x "$here/../../.venv/bin/python" ]; then
            python="$here/../../.venv/bin/python"
        else
            python=python3
        fi
    fi
    for src in "$here"/*.wat; do
        out="${src%.wat}.wasm"
        "$python" -c 'import sys, wasmtime
with open(sys.argv[1], encoding="utf-8") as f:
    wasm = wasmtime.wat2wasm(f.read())
with open(sys.argv[2], "wb") as f:
    f.write(wasm)' "$src" "$out"
        echo "built $(basename "$out") from $(basename "$src")"
    done
}

build_as() {
    cd "$here/assemblyscript"
    npm ci --no-audit --no-fund --loglevel=error
    for src in src/threshold_taker.ts src/two_leg.ts; do
        name=$(basename "$src" .ts)
        npx asc "$src" --outFile "../${name}_as.wasm"
        echo "built ${name}_as.wasm from assemblyscript/$src"
    done
}

case "$what" in
    all) build_wat; build_as ;;
    wat) build_wat ;;
    as) build_as ;;
    *) echo "usage: $0 [all|wat|as]" >&2; exit 2 ;;
esac
