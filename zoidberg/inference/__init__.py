"""Predicting with a finished run: loading, one forward pass, the gate, decisions, batches, Grad-CAM and export."""
