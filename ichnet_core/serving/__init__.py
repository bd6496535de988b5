"""Serving the model from other servers (Triton Inference Server): files only, no networking."""
