"""MkDocs hook: adds the pages generated from the code (``emofeat.docs``) and the changelog to
the site, so the reference cannot drift from the commands and option declarations."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File, Files

from emofeat import docs


def on_files(files: Files, config) -> Files:
    root = Path(config["config_file_path"]).parent
    for name in docs.PAGES:
        files.append(File.generated(config, name, content=docs.page(name)))
    changelog = (root / "CHANGELOG.md").read_text(encoding="utf-8")
    files.append(File.generated(config, "changelog.md", content=changelog))
    return files
