"""CUDA paths (skipped without a GPU): bf16/fp16 extraction against plain transformers under the
same autocast, the out-of-memory back-off on a real device, fp16/bf16 fine-tuning. CUDA kernels
differ from CPU ones at ~1e-4, so these compare CUDA with CUDA."""

import numpy as np
import pytest
import torch

from emofeat.audio import load_audio
from emofeat.extract.config import ExtractConfig
from emofeat.extract.run import extract
from emofeat.store import open_store

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def plain_cuda(folder, manifest, rows, dtype):
    from transformers import AutoFeatureExtractor, AutoModel

    model = AutoModel.from_pretrained(folder).cuda().eval()
    fe = AutoFeatureExtractor.from_pretrained(folder)
    out = []
    for r in rows:
        x = fe(load_audio(manifest.audio_path(r)), sampling_rate=16000, return_tensors="pt")
        with torch.no_grad(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
            h = model(x["input_values"].cuda()).last_hidden_state[0].float()
        out.append(h.mean(0).cpu().numpy())
    return np.stack(out)


def cosine(a, b):
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


@pytest.mark.parametrize("precision, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_half_precision_extraction_equals_plain_transformers(
    precision, dtype, manifest, manifest_path, tiny_wav2vec2, tmp_path
):
    out = tmp_path / f"{precision}.h5"
    cfg = ExtractConfig(model=str(tiny_wav2vec2), device="cuda", precision=precision)
    extract(manifest_path, out, cfg)
    rows = [0, 5, len(manifest) - 1]
    with open_store(out) as s:
        got = s.embeddings("last", rows)
    assert cosine(got, plain_cuda(tiny_wav2vec2, manifest, rows, dtype)).min() > 0.999
    assert cosine(got, plain_cuda(tiny_wav2vec2, manifest, rows, None)).min() > 0.9


def test_out_of_memory_on_the_device_splits_the_batch(
    manifest_path, tiny_wav2vec2, tmp_path, monkeypatch
):
    from emofeat.encoders.speech import SpeechEncoder

    real, calls = SpeechEncoder.forward_part, []

    def greedy(self, model, pieces, owner, *, n_rows, **kw):
        calls.append(n_rows)
        if n_rows > 2:  # a real allocation the device cannot hold
            torch.empty(1 << 50, dtype=torch.uint8, device="cuda")
        return real(self, model, pieces, owner, n_rows=n_rows, **kw)

    monkeypatch.setattr(SpeechEncoder, "forward_part", greedy)
    out = tmp_path / "oom.h5"
    extract(manifest_path, out, ExtractConfig(model=str(tiny_wav2vec2), device="cuda"))
    assert max(calls) > 2 and min(calls) <= 2
    with open_store(out) as s:
        assert s.complete and np.isfinite(s.embeddings("last", s.select())).all()


@pytest.mark.parametrize("half", ["fp16", "bf16"])
def test_half_precision_finetuning_on_cuda(half, manifest, tiny_wav2vec2, tmp_path):
    from safetensors.torch import load_file

    from emofeat.finetune.config import resolve_config
    from emofeat.finetune.run import finetune

    cfg = resolve_config(
        "wav2vec2-tiny",
        model=str(tiny_wav2vec2),
        folds=0,
        max_steps=3,
        device="cuda",
        **{half: True},
    )
    finetune(manifest, tmp_path / half, cfg)
    weights = load_file(tmp_path / half / "fold-all" / "model.safetensors")
    assert all(torch.isfinite(w).all() for w in weights.values())


def test_worker_processes_pinned_inputs_and_the_copy_stream_change_no_value(
    manifest_path, tiny_wav2vec2, tmp_path
):
    """Inputs read in worker processes, pinned and copied on a side stream give the values the
    main process gives; both match the CPU up to CUDA's numerics."""
    stores = {}
    for name, device, workers in [("cpu", "cpu", 0), ("main", "cuda", 0), ("workers", "cuda", 3)]:
        stores[name] = tmp_path / f"{name}.h5"
        cfg = ExtractConfig(
            model=str(tiny_wav2vec2), layers="all", device=device, workers=workers, flush_rows=9
        )
        extract(manifest_path, stores[name], cfg)
    main, workers, cpu = (open_store(stores[k]) for k in ("main", "workers", "cpu"))
    with main, workers, cpu:
        for name in main.embedding_names:
            # Same batches, same kernels (float atomics aside): equal to rounding.
            np.testing.assert_allclose(
                main.embeddings(name), workers.embeddings(name), atol=1e-6, rtol=1e-6
            )
            assert cosine(main.embeddings(name), cpu.embeddings(name)).min() > 0.9999
