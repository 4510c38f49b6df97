"""Extraction throughput per encoder family (issue 24), so that a regression in one shows.

For every family emofeat supports, `emofeat extract --layers all` (fp32, this machine's CPU or
``--device cuda``) over the same inputs: ``--clips`` clips of 1-8 s for speech models (Whisper:
each clip is a 30-s log-mel window, so it costs 30 s of compute whatever its length) and
``--sentences`` transcripts for text models. Sizes: ``tiny`` (emofeat's test builders, width 64:
the host's work around the model) and ``base`` (the base architectures with random weights:
wav2vec2-base, HuBERT-base, WavLM-base(+), data2vec-audio-base, Whisper-small's encoder,
BERT-base (KoBERT), RoBERTa-base (KLUE), XLM-R-base, ELECTRA-base, mDeBERTa-v3-base; text
vocabularies are the tiny tokenizers', which changes no compute but the embedding lookup).

Reports audio seconds (speech) or utterances (text) per second of the extraction's compute loop
and of the whole call, with the machine, and prints a final JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import bench_data
from extract_bench import machine

SPEECH = ("wav2vec2", "wav2vec2-base", "hubert", "wavlm", "data2vec-audio", "whisper")
TEXT = ("kobert", "roberta", "xlm-roberta", "kcelectra", "deberta-v2")


def base_config(kind: str, tokenizer_size: int = 0):
    """The base architecture of ``kind`` (random weights)."""
    import transformers as tf

    text = dict(vocab_size=tokenizer_size, max_position_embeddings=514)
    return {
        "wav2vec2": lambda: tf.Wav2Vec2Config(
            feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True
        ),  # XLS-R style layer norm, at base width
        "wav2vec2-base": tf.Wav2Vec2Config,
        "hubert": tf.HubertConfig,
        "wavlm": tf.WavLMConfig,
        "data2vec-audio": tf.Data2VecAudioConfig,
        "whisper": lambda: tf.WhisperConfig(
            d_model=768,
            encoder_layers=12,
            encoder_attention_heads=12,
            encoder_ffn_dim=3072,
            decoder_layers=1,
            num_mel_bins=80,
        ),  # whisper-small's encoder
        "kobert": lambda: tf.BertConfig(**{**text, "max_position_embeddings": 512}),
        "roberta": lambda: tf.RobertaConfig(**text, type_vocab_size=1, pad_token_id=1),
        "xlm-roberta": lambda: tf.XLMRobertaConfig(**text, type_vocab_size=1, pad_token_id=1),
        "kcelectra": lambda: tf.ElectraConfig(
            **{**text, "max_position_embeddings": 512},
            embedding_size=768,
            hidden_size=768,
            num_attention_heads=12,
            intermediate_size=3072,
        ),
        "deberta-v2": lambda: tf.DebertaV2Config(
            **{**text, "max_position_embeddings": 512},
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            relative_attention=True,
            position_buckets=256,
            pos_att_type=["p2c", "c2p"],
        ),
    }[kind]()


def build(kind: str, folder: Path, size: str, manifest: Path) -> Path:
    """The tiny model of ``kind``; for ``base``, its weights replaced by the base architecture."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from emofeat.testing.tiny import build_tiny

    if (folder / "config.json").is_file():
        return folder
    build_tiny(kind, folder, manifest=manifest, hidden=64)
    if size == "tiny":
        return folder
    size_of_vocab = 0
    if kind in TEXT:
        from emofeat.encoders.text import load_tokenizer

        tok = (
            load_tokenizer(str(folder))
            if kind == "kobert"
            else AutoTokenizer.from_pretrained(folder)
        )
        size_of_vocab = len(tok)
    config = base_config(kind, size_of_vocab)
    arch = AutoConfig.from_pretrained(folder).architectures
    for f in folder.glob("*.safetensors"):
        f.unlink()
    if kind == "whisper":
        from transformers import WhisperForConditionalGeneration

        WhisperForConditionalGeneration(config).save_pretrained(folder)
    else:
        config.architectures = arch
        AutoModel.from_config(config).save_pretrained(folder)
    return folder


def corpus(out: Path, clips: int, sentences: int, seed: int) -> tuple[Path, Path, float]:
    """A speech manifest and a text manifest (generic CSVs), and the speech seconds."""
    speech, seconds = bench_data.manifest(out, "speech", clips, seed=seed)
    text, _ = bench_data.manifest(out, "text", sentences, seed=seed, audio=None, text=True)
    return speech, text, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench-out/families"))
    ap.add_argument("--size", choices=["tiny", "base"], default="tiny")
    ap.add_argument("--clips", type=int, default=200)
    ap.add_argument("--sentences", type=int, default=200)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", help="these kinds only")
    args = ap.parse_args()
    import yaml

    from emofeat.extract.config import ExtractConfig
    from emofeat.extract.run import extract
    from emofeat.store import open_store

    out = args.out / args.size
    out.mkdir(parents=True, exist_ok=True)
    speech_m, text_m, seconds = corpus(out, args.clips, args.sentences, args.seed)
    results = []
    for kind in args.only or (*SPEECH, *TEXT):
        folder = build(kind, out / "models" / kind, args.size, text_m)
        manifest = speech_m if kind in SPEECH else text_m
        store = out / f"{kind}.h5"
        start = time.perf_counter()
        extract(
            manifest,
            store,
            ExtractConfig(model=str(folder), layers="all", device=args.device, overwrite=True),
        )
        wall = time.perf_counter() - start
        with open_store(store) as s:
            timings = yaml.safe_load(s.attrs["timings"])
            family = s.provenance.family
        loop = timings["seconds"]
        row = {"kind": kind, "family": family, "wall_s": round(wall, 2), "loop_s": loop}
        if kind in SPEECH:
            row["audio_s_per_s"] = round(seconds / loop, 1)
            row["audio_s_per_s_whole_call"] = round(seconds / wall, 1)
        else:
            row["utt_per_s"] = round(args.sentences / loop, 1)
            row["utt_per_s_whole_call"] = round(args.sentences / wall, 1)
        row["peak_memory"] = timings["peak_memory"].replace("peak resident memory ", "")
        results.append(row)
        print(json.dumps(row), flush=True)
    print(f"machine: {machine(args.device)}")
    print("| kind | family | rate (loop) | rate (whole call) | peak |")
    print("| --- | --- | --- | --- | --- |")
    for r in results:
        unit = "audio-s/s" if "audio_s_per_s" in r else "utt/s"
        loop = r.get("audio_s_per_s", r.get("utt_per_s"))
        whole = r.get("audio_s_per_s_whole_call", r.get("utt_per_s_whole_call"))
        print(
            f"| {r['kind']} | {r['family']} | {loop} {unit} | {whole} {unit} | {r['peak_memory']} |"
        )
    print(
        json.dumps(
            {
                "bench": "families",
                "size": args.size,
                "machine": machine(args.device),
                "results": results,
            }
        )
    )
    if args.size == "base":
        shutil.rmtree(out / "models", ignore_errors=True)  # ~5 GB of random weights


if __name__ == "__main__":
    main()
