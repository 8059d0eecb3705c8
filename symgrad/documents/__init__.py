"""Stage 7, documents: the derivation rendered as LaTeX, Markdown, text and a graph."""
