#!/usr/bin/env sh
# The scalar explorer on a*b + c, with its expression graph (DOT; SVG when Graphviz is
# installed), written into OUT:
#   sh examples/scalar/make.sh [OUT]             # default: symgrad-output/scalar
# The committed graph next to this script is rewritten by `python examples/regenerate.py`.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PYTHON=${PYTHON:-python}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
out=${1:-symgrad-output/scalar}
mkdir -p "$out"

set -x
"$PYTHON" -m symgrad scalar "a*b + c" --at a=2,b=-3,c=10 --graph "$out/graph.svg"
