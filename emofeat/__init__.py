"""emofeat: multimodal (speech + text) emotion recognition on Korean conversational corpora.

Fine-tune encoders with cross-fitting, dump pooled embeddings and logits into HDF5 feature
stores, and stack them with leak-free meta-learners. One package per pipeline step —
:mod:`emofeat.corpus`, :mod:`emofeat.finetune`, :mod:`emofeat.extract`, :mod:`emofeat.fuse`,
:mod:`emofeat.store`, :mod:`emofeat.stack` — with the whole protocols in :mod:`emofeat.recipes`,
analysis in :mod:`emofeat.analysis` and the tiny models and synthetic corpus in
:mod:`emofeat.testing`. Importing the package is cheap: heavy dependencies (torch,
transformers) are imported by the modules that need them.
"""

__version__ = "0.4.0"
