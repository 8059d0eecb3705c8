#!/usr/bin/env sh
# Regenerate a network's committed documents with the symgrad command line: Markdown,
# LaTeX (and its PDF, with a PNG of each page, when pdflatex and pdftoppm are installed),
# the graph and the HTML page (and the page's screenshot when chromium is installed).
#   sh examples/seed_net/make.sh                          # the seed network, here
#   sh examples/seed_net/make.sh SPEC DIR                 # another spec, into DIR
#   sh examples/seed_net/make.sh ../digits_cnn/digits_cnn.toml ../digits_cnn
# SPEC is relative to DIR (the files' headers name it so). Uses the symgrad of this
# checkout (python -m symgrad); set PYTHON to pick an interpreter.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PYTHON=${PYTHON:-python}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
spec=${1:-../seed_net.toml}
out=$(cd "${2:-$here}" && pwd)
cd "$out"  # relative paths, so the files' headers name the spec as given

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
fi
if command -v chromium >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --user-data-dir="$tmp" --virtual-time-budget=5000 --window-size=1400,900 \
        --screenshot="$out/page.png" "file://$out/page.html" 2>/dev/null
    rm -rf "$tmp"
fi
