#!/usr/bin/env sh
# The seed network's documents with the symgrad command line, written into OUT: Markdown,
# LaTeX (and its PDF when pdflatex is installed), the graph (SVG when Graphviz is installed)
# and the HTML page:
#   sh examples/seed_net/make.sh [OUT]           # default: symgrad-output/seed_net
# The committed copies next to this script are rewritten by `python examples/regenerate.py`.
# Uses the symgrad of this checkout (python -m symgrad); set PYTHON to pick an interpreter.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PYTHON=${PYTHON:-python}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "${1:-symgrad-output/seed_net}"
out=$(cd "${1:-symgrad-output/seed_net}" && pwd)
cd "$here"  # relative paths, so the files' headers name ../seed_net.toml

set -x
"$PYTHON" -m symgrad derive ../seed_net.toml --to markdown -o "$out/derivation.md"
"$PYTHON" -m symgrad derive ../seed_net.toml --to latex -o "$out/derivation.tex" --graph "$out/graph.svg"
"$PYTHON" -m symgrad derive ../seed_net.toml --to html -o "$out/page.html"
if command -v pdflatex >/dev/null 2>&1; then
    (cd "$out" && pdflatex -interaction=nonstopmode -halt-on-error derivation.tex >/dev/null)
else
    echo "pdflatex not found, so no derivation.pdf (install TeX Live, e.g. apt-get install texlive-latex-recommended)" >&2
fi
