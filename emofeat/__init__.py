"""emofeat: multimodal (speech + text) emotion recognition on Korean conversational corpora.

Fine-tune encoders with cross-fitting, dump pooled embeddings and logits into HDF5 feature
stores, and stack them with leak-free meta-learners. Importing the package is cheap: heavy
dependencies (torch, transformers) are imported by the modules that need them.
"""

__version__ = "0.1.0"


def infer(*args, **kwargs):
    """Label new recordings with a trained stack; see :func:`emofeat.inference.infer`."""
    from emofeat.inference import infer as _infer

    return _infer(*args, **kwargs)
