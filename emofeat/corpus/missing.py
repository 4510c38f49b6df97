"""The missing-files policy shared by the corpus readers."""

from __future__ import annotations

import logging

from emofeat.errors import CorpusError

log = logging.getLogger(__name__)


def handle_missing(corpus: str, missing: list[tuple[str, str]], skip_missing: bool) -> list[str]:
    """Raise on missing files, or with ``skip_missing`` log them and return the skipped ids.

    ``missing`` holds ``(id, path)`` pairs.
    """
    if not missing:
        return []
    listing = "\n".join(f"  {uid}: {path}" for uid, path in missing[:10])
    if not skip_missing:
        raise CorpusError(
            f"{corpus}: {len(missing)} utterance(s) lack their files; first ones:\n{listing}\n"
            "Restore the files, or pass --skip-missing to leave these utterances out."
        )
    log.warning(
        "%s: skipped %d utterance(s) with missing files:\n%s", corpus, len(missing), listing
    )
    return [uid for uid, _ in missing]
