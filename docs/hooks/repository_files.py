"""MkDocs hook: publish the example outputs and benchmark plots with the site.

The seed network's HTML derivation page, its graph and screenshot, the training plots and
the benchmark plots live in the repository next to the code that writes them; this hook
adds them to the site under the same paths (``examples/seed_net/page.html`` ...), so the
pages link to them and ``mkdocs build --strict`` checks those links.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PUBLISHED = (
    "examples/seed_net/page.html",
    "examples/seed_net/page.png",
    "examples/seed_net/graph.svg",
    "examples/seed_net/derivation.pdf",
    "examples/seed_net/derivation.tex",
    "examples/seed_net.toml",
    "examples/scalar/graph.png",
    "examples/digits/training.png",
    "examples/digits_cnn/training.png",
    "bench/speed.png",
    "bench/scaling.png",
)


def on_files(files: Files, config) -> Files:  # noqa: ANN001 - MkDocs' hook signature
    for rel in PUBLISHED:
        if (ROOT / rel).is_file():
            files.append(
                File(
                    rel,
                    src_dir=str(ROOT),
                    dest_dir=config["site_dir"],
                    use_directory_urls=config["use_directory_urls"],
                )
            )
    return files
