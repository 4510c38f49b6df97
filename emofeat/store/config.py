"""The options of ``emofeat store export``, declared once (:mod:`emofeat.options`)."""

from __future__ import annotations

from dataclasses import dataclass

from emofeat.options import Options, option


@dataclass(frozen=True)
class ExportConfig(Options):
    """What an export writes."""

    format: str = option(
        "npz",
        help="npz (arrays) or parquet (one row per utterance, array columns; needs pyarrow).",
        choices=("npz", "parquet"),
    )
    embedding: str | None = option(None, help="Only this embedding.", default_text="every one")
