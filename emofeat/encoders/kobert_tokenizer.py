"""KoBERT's SentencePiece tokenizer (kobert-transformers), fixed for transformers 4.x.

Imported only where a KoBERT folder is loaded: the kobert-transformers package imports
transformers' BERT models on import.
"""

from __future__ import annotations

import os

from kobert_transformers.tokenization_kobert import KoBertTokenizer


class KoBertTokenizerFixed(KoBertTokenizer):
    """kobert-transformers' tokenizer, fixed for transformers 4.x.

    ``save_vocabulary`` takes ``filename_prefix`` (``save_pretrained`` passes it), and encodings
    include ``token_type_ids`` (BERT expects them).
    """

    model_input_names = ["input_ids", "token_type_ids", "attention_mask"]

    def save_vocabulary(
        self, save_directory: str, filename_prefix: str | None = None
    ) -> tuple[str, str]:
        os.makedirs(save_directory, exist_ok=True)
        return super().save_vocabulary(save_directory)
