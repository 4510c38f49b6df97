#!/usr/bin/env bash
# Download into DIR (default .whl) the wheels a GPU machine without registry access needs beside
# its own CUDA torch, for its Python 3.12: transformers 4.x (emofeat needs <5), the audio stack,
# KoBERT's tokenizer package and LightGBM. Run from the project root on a machine that reaches
# PyPI; keep DIR out of git (.git/info/exclude) and bring it along with the checkout.
set -euo pipefail
DIR=${1:-.whl}
mkdir -p "$DIR"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DIR" \
  transformers==4.57.6 tokenizers==0.22.2 huggingface_hub==0.36.2 kobert-transformers==0.6.0 \
  soundfile==0.14.0 cffi pycparser soxr==1.1.0 lightgbm==4.7.0
ls "$DIR"
