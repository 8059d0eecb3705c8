#!/usr/bin/env sh
# Regenerate the seed network's committed documents with the symgrad command line:
# Markdown, LaTeX (and its PDF when pdflatex is installed), the graph and the HTML page
# (and the page's screenshot when chromium is installed).
#   sh examples/seed_net/make.sh
# Uses the symgrad of this checkout (python -m symgrad); set PYTHON to pick an interpreter.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
PYTHON=${PYTHON:-python}
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
cd "$here"  # relative paths, so the files' headers name ../seed_net.toml

set -x
"$PYTHON" -m symgrad derive ../seed_net.toml --to markdown -o derivation.md
"$PYTHON" -m symgrad derive ../seed_net.toml --to latex -o derivation.tex --graph graph.svg
"$PYTHON" -m symgrad derive ../seed_net.toml --to html -o page.html
if command -v pdflatex >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    cp derivation.tex "$tmp/"
    # a fixed date: the PDF changes only when the derivation does
    (cd "$tmp" && SOURCE_DATE_EPOCH=1700000000 FORCE_SOURCE_DATE=1 pdflatex -interaction=nonstopmode -halt-on-error derivation.tex >/dev/null)
    cp "$tmp/derivation.pdf" derivation.pdf
    rm -rf "$tmp"
fi
if command -v chromium >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    chromium --headless --no-sandbox --disable-gpu --hide-scrollbars \
        --user-data-dir="$tmp" --virtual-time-budget=5000 --window-size=1400,900 \
        --screenshot="$here/page.png" "file://$here/page.html#step-delta2" 2>/dev/null
    rm -rf "$tmp"
fi
