"""Readers that turn a corpus on disk into a manifest (see :mod:`emofeat.corpus.manifest`)."""
