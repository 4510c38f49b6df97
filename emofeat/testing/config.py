"""The options of ``emofeat models tiny``, declared once (:mod:`emofeat.options`)."""

from __future__ import annotations

from dataclasses import dataclass

from emofeat.options import Options, option, seed_option


def _kinds() -> tuple[str, ...]:
    from emofeat.testing.tiny import TINY_KINDS  # (imports torch: asked when needed)

    return TINY_KINDS


@dataclass(frozen=True)
class TinyConfig(Options):
    """A tiny random model in the on-disk format of a hub model."""

    kind: str = option(help="Which hub model's format.", choices=_kinds)
    hidden: int = option(64, help="Hidden size.", low=4, high=4096)
    layers: int = option(2, help="Transformer layers.", low=1, high=48)
    seed: int = seed_option()
