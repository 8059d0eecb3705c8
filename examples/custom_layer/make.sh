#!/usr/bin/env sh
# Regenerate this example's committed outputs with the symgrad command line, then
# verify the generated module (finite differences, and PyTorch/JAX when installed).
#   sh examples/custom_layer/make.sh
# Uses the symgrad of this checkout (python -m symgrad); set PYTHON to pick an interpreter.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PYTHON=${PYTHON:-python}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
cd "$here"  # relative paths, so the files' headers name custom_layer.toml

set -x
"$PYTHON" -m symgrad derive custom_layer.toml --form both --to markdown -o derivation.md
"$PYTHON" -m symgrad codegen custom_layer.toml -o custom_layer_net.py
"$PYTHON" -m symgrad verify custom_layer.toml --module custom_layer_net.py
