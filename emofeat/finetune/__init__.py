"""Cross-fitted fine-tuning of pretrained encoders with ``transformers.Trainer``."""
