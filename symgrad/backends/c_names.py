"""Names and comments of the C target: identifiers that compile, comments that stay comments.

User-controlled strings reach the generated C in two places: quantity names (parameters,
layer outputs) become identifiers, and formulas and the spec's name land in comments.
An identifier that is not plain ASCII, or that is a C keyword, a <math.h> name or one of
the generated code's own locals, is renamed; comment text cannot close its comment or
start a trigraph.
"""

from __future__ import annotations

import re
from pathlib import Path

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

C_KEYWORDS = frozenset(
    """auto break case char const continue default do double else enum extern float for
    goto if inline int long register restrict return short signed sizeof static struct
    switch typedef union unsigned void volatile while _Bool _Complex _Imaginary""".split()  # noqa: SIM905 - a list of words
)
#: Names the generated functions use themselves (arguments, locals, loop indices).
LOCALS = frozenset(
    """params grads workspace scratch X Y n nr out acc k loss seed state lr size_t uint64_t
    NULL HUGE_VAL HUGE_VALF""".split()  # noqa: SIM905 - a list of words
)
MATH = frozenset(
    """exp log sqrt fabs tanh cosh sinh sin cos tan fmax fmin pow log1p expm1 floor ceil
    expf logf sqrtf fabsf tanhf coshf sinhf sinf cosf fmaxf fminf powf log1pf expm1f abs
    div main errno assert""".split()  # noqa: SIM905 - a list of words
)


def _reserved(name: str) -> bool:
    return (
        name in C_KEYWORDS
        or name in LOCALS
        or name in MATH
        or re.fullmatch(r"i\d+|s\d+|w\d+", name) is not None
        or name.startswith("_")
    )


def c_names(names: list[str], prefix: str) -> dict[str, str]:
    """Each quantity name -> a C identifier, unique, never a keyword, a <math.h> name, a
    local of the generated code or a helper (``<prefix>_...``)."""
    out: dict[str, str] = {}
    taken: set[str] = set()
    for name in names:
        ok = _IDENT.fullmatch(name) and not _reserved(name) and not name.startswith(prefix + "_")
        cand = name if ok else "q_" + re.sub(r"[^A-Za-z0-9_]", "_", name).strip("_")
        base, k = cand, 1
        while cand in taken or _reserved(cand):
            k += 1
            cand = f"{base}_{k}"
        out[name] = cand
        taken.add(cand)
    return out


def c_comment(text: str) -> str:
    """``text`` safe inside ``/* ... */``: no comment end, no trigraph, printable ASCII."""
    text = text.replace("*/", "* /").replace("/*", "/ *").replace("??", "? ?")
    return "".join(ch if 32 <= ord(ch) < 127 else f"\\u{ord(ch):04x}" for ch in text)


def prefix_of(path: str | None) -> str:
    """The identifier prefix of a generated file: its stem (``net.c`` -> ``net``) made an
    identifier, ``net`` when there is none."""
    stem = Path(path).stem if path else "net"
    stem = re.sub(r"[^A-Za-z0-9_]", "_", stem).strip("_").lower() or "net"
    if stem[0].isdigit() or stem in C_KEYWORDS or stem in MATH:
        stem = "net_" + stem
    return stem


def c_paths(output: str) -> tuple[Path, Path]:
    """The source and header a ``-o`` path names: ``net.c`` or ``net.h`` (either names
    both), or a path without a suffix (``net`` -> ``net.c``, ``net.h``)."""
    p = Path(output)
    if p.suffix not in (".c", ".h", ""):
        from symgrad.errors import SpecError

        raise SpecError(f"the C target writes a .c and a .h file; -o {output} ends in {p.suffix}")
    base = p.with_suffix("") if p.suffix else p
    return base.with_name(base.name + ".c"), base.with_name(base.name + ".h")


def c_string(text: str) -> str:
    """``text`` as the contents of a C string literal: printable ASCII as is (but quotes,
    backslashes and question marks, which could start a trigraph), every other UTF-8 byte
    as an octal escape."""
    out = []
    for byte in text.encode("utf-8"):
        ch = chr(byte)
        out.append(ch if 32 <= byte < 127 and ch not in '"\\?' else f"\\{byte:03o}")
    return "".join(out)
