"""The per-file loop people write: one clip at a time through the feature extractor and the model
(fp32), the mean of the last hidden state copied to the host, saved with numpy. The baseline of
``extract_bench.py --whole-process``: run as its own process, imports and model loading included.

    python benchmarks/naive_extract.py MANIFEST MODEL_DIR OUT.npy
"""

import sys

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from transformers import AutoFeatureExtractor, AutoModel

manifest, model_dir, out = sys.argv[1:4]
frame = pd.read_csv(manifest, keep_default_na=False)
root = __import__("pathlib").Path(manifest).parent
fe = AutoFeatureExtractor.from_pretrained(model_dir)
model = AutoModel.from_pretrained(model_dir).eval()
pooled = []
for path in frame["audio_path"]:
    x, sr = sf.read(str(root / path), dtype="float32")
    with torch.no_grad():
        hidden = model(**fe(x, sampling_rate=sr, return_tensors="pt")).last_hidden_state
    pooled.append(hidden.mean(1)[0].cpu().numpy())
np.save(out, np.stack(pooled))
