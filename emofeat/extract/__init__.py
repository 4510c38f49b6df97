"""Batched, resumable extraction of pooled embeddings and logits into a feature store."""
