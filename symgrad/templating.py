"""The Jinja2 environment shared by the code and document templates (``templates/``)."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2


def template_dir() -> Path:
    """``templates/`` of a source checkout (beside the package), else as installed.

    A checkout's own templates win so that a work tree run with ``PYTHONPATH=.`` never
    renders another checkout's templates; the wheel ships them as ``symgrad.templates``.
    """
    source = Path(__file__).resolve().parent.parent / "templates"
    if (source / "module.py.j2").is_file():
        return source
    import symgrad.templates as t  # installed wheel: templates/ is shipped as this package

    return Path(t.__file__).parent


@lru_cache(maxsize=8)
def environment(extra: Path | None = None) -> jinja2.Environment:
    """The environment over ``templates/``; ``extra``: a folder searched first (a backend's
    own templates, which may include symgrad's shared parts)."""
    dirs = [str(extra)] if extra is not None else []
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader([*dirs, str(template_dir())]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )


@lru_cache(maxsize=1)
def conv_helpers() -> dict[str, Callable[..., Any]]:
    """The generated module's conv and pooling helpers (``_windows``, ``_correlate`` ...),
    executed from the template the module is printed from (symgrad's own file, never user
    input), so numeric checks compute exactly what generated code does."""
    import itertools

    import numpy as np

    template = environment().get_template("conv_helpers.py.j2")
    code = template.render(xp="np", helpers={"_max_pool_pick"})
    space: dict[str, Any] = {"np": np, "itertools": itertools}
    exec(compile("from __future__ import annotations\n" + code, "<conv_helpers>", "exec"), space)
    return {k: v for k, v in space.items() if k.startswith("_") and callable(v) and k[1] != "_"}
