"""Escaping user-controlled strings for every format symgrad writes.

A spec's file name or path, the network's name, layer and loss names come from the user
and may contain anything a file system or TOML string allows: backslashes (Windows
paths), quotes, ``\"\"\"``, newlines, ``-->``, ``\\input{...}``, ``<script>``. Each
function here makes one such string inert in one context, so that the output still
compiles, imports or parses and shows the text literally:

=====================  =====================================================
:func:`py_literal`      a Python string literal (``repr``: always valid)
:func:`py_docstring`    text inside a ``\"\"\"`` docstring
:func:`py_comment`      text after ``#`` (one line)
:func:`latex_text`      LaTeX text mode (also inside ``\\texttt{}``)
:func:`latex_comment`   text after ``%`` (one line)
:func:`markdown_text`   Markdown inline text (no HTML, no emphasis, no links)
:func:`html_text`       HTML text and attribute values
:func:`html_comment`    text inside ``<!-- -->`` (Markdown, HTML, SVG)
:func:`dot_string`      a Graphviz DOT double-quoted string, quotes included
:func:`dot_comment`     text after ``//`` (one line)
:func:`html_id`         an HTML ``id`` / URL fragment (letters, digits, ``-``, ``_``)
:func:`latex_name`      a name in LaTeX math mode (``\\text{...}`` unless an identifier)
:func:`py_identifier`   a name pasted into Python code: an identifier, or ValueError
=====================  =====================================================

:func:`comment` picks the comment escaper for an output format by name.
"""

from __future__ import annotations

import html
import re

#: Characters that end a line somewhere (Python's tokenizer, str.splitlines, editors).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def one_line(text: str) -> str:
    """``text`` with every control or line-breaking character shown as its escape (``\\n``)."""

    def esc(m: re.Match[str]) -> str:
        return ascii(m.group())[1:-1]

    return _CONTROL.sub(esc, str(text))


def py_literal(text: str) -> str:
    """A Python string literal (quotes included) whose value is ``text``."""
    return repr(str(text))


def py_docstring(text: str) -> str:
    """``text`` for a (non-raw) triple-double-quoted docstring: its ``__doc__`` shows ``text``.

    Backslashes are doubled and quotes escaped (``\"\"\"`` cannot end the docstring); control
    characters and line breaks are written as escapes, so the text stays on one line.
    """
    out = str(text).replace("\\", "\\\\").replace('"', '\\"')
    return one_line(out) if _CONTROL.search(out) else out


def py_comment(text: str) -> str:
    """``text`` for the rest of a ``#`` comment line (no line break can end the comment)."""
    return one_line(text)


_LATEX = {
    "\\": r"\textbackslash{}",
    "{": r"\{",
    "}": r"\}",
    "$": r"\$",
    "&": r"\&",
    "#": r"\#",
    "^": r"\textasciicircum{}",
    "_": r"\_",
    "%": r"\%",
    "~": r"\textasciitilde{}",
    "<": r"\textless{}",
    ">": r"\textgreater{}",
    "|": r"\textbar{}",
    '"': "''",  # (\textquotedbl needs the T1 font encoding)
}


def latex_text(text: str) -> str:
    """``text`` for LaTeX text mode: specials escaped, control characters shown as ``?``.

    Characters outside printable ASCII become ``?``: pdflatex stops at a Unicode
    character it has no glyph for, and the document must compile whatever the name.
    """
    out = []
    for c in str(text):
        if c in _LATEX:
            out.append(_LATEX[c])
        elif " " <= c <= "~":
            out.append(c)
        else:
            out.append("?")
    return "".join(out)


def latex_comment(text: str) -> str:
    """``text`` for the rest of a ``%`` comment line (a line break would end the comment)."""
    return one_line(text)


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~:])")


def markdown_text(text: str) -> str:
    """``text`` as literal Markdown inline text: HTML is entity-escaped (``<`` -> ``&lt;``), every
    Markdown punctuation character is backslash-escaped, line breaks become spaces."""
    flat = " ".join(_CONTROL.sub(" ", str(text)).split(" "))
    return _MARKDOWN_SPECIAL.sub(r"\\\1", html.escape(flat, quote=True))


def html_text(text: str) -> str:
    """``text`` for HTML text or a quoted attribute value."""
    return html.escape(str(text), quote=True)


def html_comment(text: str) -> str:
    """``text`` for the inside of ``<!-- ... -->``: ``--`` and ``>`` cannot end the comment."""
    out = one_line(text).replace("-", "&#45;").replace(">", "&gt;").replace("<", "&lt;")
    return out


def dot_string(text: str) -> str:
    """A DOT double-quoted string (quotes included) showing ``text`` literally.

    Backslashes are doubled (``\\N``, ``\\G``, ``\\l`` are escapes in labels) and quotes
    escaped; line breaks become Graphviz's ``\\n``.
    """
    s = str(text).replace("\\", "\\\\").replace('"', '\\"')
    s = s.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\n")
    return '"' + _CONTROL.sub("?", s) + '"'


def dot_comment(text: str) -> str:
    """``text`` for the rest of a ``//`` comment line."""
    return one_line(text)


#: A plain ASCII identifier: the only names printed as they are in code and math.
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_identifier(text: str) -> bool:
    """Whether ``text`` is a plain ASCII identifier (safe in code, math and ids as it is)."""
    return bool(_IDENTIFIER.fullmatch(str(text)))


def html_id(text: str) -> str:
    """``text`` as an HTML ``id`` and URL fragment: letters, digits, ``-`` and ``_`` are
    kept, every other character is written as ``_xHH_`` (its code point in hex)."""
    return "".join(
        c if c.isascii() and (c.isalnum() or c in "-_") else f"_x{ord(c):x}_" for c in str(text)
    )


def latex_name(text: str) -> str:
    """A name for LaTeX math mode: an identifier as it is, anything else as inert text
    (``\\text{...}`` with every special escaped: no ``\\input`` can be live)."""
    s = str(text)
    return s if is_identifier(s) else "\\text{" + latex_text(s) + "}"


def py_identifier(text: str) -> str:
    """``text`` if it can be pasted into Python code as a name; ValueError otherwise."""
    import keyword

    s = str(text)
    if not is_identifier(s) or keyword.iskeyword(s):
        raise ValueError(f"{ascii(s)[:60]} is not a Python identifier: it cannot name code")
    return s


_COMMENTS = {
    "python": py_comment,
    "text": py_comment,
    "latex": latex_comment,
    "markdown": html_comment,
    "html": html_comment,
    "svg": html_comment,
    "dot": dot_comment,
}


def comment(fmt: str, text: str) -> str:
    """``text`` escaped for a comment in output format ``fmt`` (python, text, latex,
    markdown, html, svg, dot)."""
    return _COMMENTS[fmt](text)


__all__ = [
    "comment",
    "dot_comment",
    "dot_string",
    "html_comment",
    "html_id",
    "html_text",
    "is_identifier",
    "latex_name",
    "latex_comment",
    "latex_text",
    "markdown_text",
    "one_line",
    "py_comment",
    "py_docstring",
    "py_identifier",
    "py_literal",
]
