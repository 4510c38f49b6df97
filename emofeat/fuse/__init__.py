"""Base models trained on feature stores (MMM), cross-fitted like fine-tuned ones."""
