#!/usr/bin/env sh
# The C example: regenerate circle.c and circle.h from circle.toml (symgrad), then build
# the trainer into build/ with one cc command and run it. Nothing else is written.
#   sh examples/c/make.sh            # build and run
#   sh examples/c/make.sh generate   # also regenerate circle.c and circle.h first
# Uses the symgrad of this checkout (python -m symgrad); set PYTHON, CC, CFLAGS to choose.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$here"
if [ "${1:-}" = "generate" ]; then
    PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "${PYTHON:-python}" -m symgrad codegen \
        circle.toml --target c -o circle.c --optimizer adam
fi
mkdir -p build
set -x
"${CC:-cc}" -std=c99 ${CFLAGS:--O2} main.c circle.c -lm -o build/train
./build/train
