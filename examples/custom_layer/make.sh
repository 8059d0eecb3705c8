#!/usr/bin/env sh
# Derive this example with the symgrad command line, generate its module and verify it
# (finite differences, and PyTorch/JAX when installed), writing into OUT:
#   sh examples/custom_layer/make.sh [OUT]       # default: symgrad-output/custom_layer
# The committed derivation.md and custom_layer_net.py are rewritten by
# `python examples/regenerate.py`, never by this script.
# Uses the symgrad of this checkout (python -m symgrad); set PYTHON to pick an interpreter.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PYTHON=${PYTHON:-python}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "${1:-symgrad-output/custom_layer}"
out=$(cd "${1:-symgrad-output/custom_layer}" && pwd)
cd "$here"  # relative paths, so the files' headers name custom_layer.toml

set -x
"$PYTHON" -m symgrad derive custom_layer.toml --form both --to markdown -o "$out/derivation.md"
"$PYTHON" -m symgrad codegen custom_layer.toml -o "$out/custom_layer_net.py"
"$PYTHON" -m symgrad verify custom_layer.toml --module "$out/custom_layer_net.py"
