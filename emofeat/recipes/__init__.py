"""Whole protocols: the reference pipeline as steps, the emo-ensemble recipe, the demo, presets and inference on new recordings."""
