#!/usr/bin/env sh
# A network's documents with the symgrad command line: Markdown, LaTeX (and its PDF, with a
# PNG of each page, when pdflatex and pdftoppm are installed), the graph (SVG with Graphviz)
# and the HTML page (and the page's screenshot when chromium is installed), written into OUT:
#   sh examples/seed_net/make.sh                       # the seed network, into symgrad-output/seed_net
#   sh examples/seed_net/make.sh SPEC [OUT]            # another spec (default OUT: symgrad-output/NAME)
# The committed copies beside each spec are rewritten with OUT = that folder, e.g.
#   sh examples/seed_net/make.sh examples/seed_net.toml examples/seed_net
# (`python examples/regenerate.py` rewrites the text outputs). Uses the symgrad of this
# checkout (python -m symgrad); set PYTHON to pick an interpreter.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PYTHON=${PYTHON:-python}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
spec_arg=${1:-$here/../seed_net.toml}
spec_abs=$(cd "$(dirname "$spec_arg")" && pwd)/$(basename "$spec_arg")
name=$(basename "$spec_abs" .toml)
mkdir -p "${2:-symgrad-output/$name}"
out=$(cd "${2:-symgrad-output/$name}" && pwd)
cd "$out"  # the spec relative to OUT, so the files' headers name it as a reader there would
spec=$("$PYTHON" -c 'import os, sys; print(os.path.relpath(sys.argv[1]))' "$spec_abs")

set -x
"$PYTHON" -m symgrad derive "$spec" --to markdown -o derivation.md
"$PYTHON" -m symgrad derive "$spec" --to latex -o derivation.tex --graph graph.svg
"$PYTHON" -m symgrad derive "$spec" --to html -o page.html
if command -v pdflatex >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    cp derivation.tex "$tmp/"
    # a fixed date: the PDF changes only when the derivation does
    (cd "$tmp" && SOURCE_DATE_EPOCH=1700000000 FORCE_SOURCE_DATE=1 pdflatex -interaction=nonstopmode -halt-on-error derivation.tex >/dev/null)
    cp "$tmp/derivation.pdf" derivation.pdf
    rm -rf "$tmp"
    if command -v pdftoppm >/dev/null 2>&1; then
        rm -f derivation-page-*.png
        pdftoppm -png -r 50 derivation.pdf derivation-page
    fi
else
    echo "pdflatex not found, so no derivation.pdf (install TeX Live, e.g. apt-get install texlive-latex-recommended)" >&2
fi
if command -v chromium >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --user-data-dir="$tmp" --virtual-time-budget=5000 --window-size=1400,900 \
        --screenshot="$out/page.png" "file://$out/page.html" 2>/dev/null
    rm -rf "$tmp"
fi
