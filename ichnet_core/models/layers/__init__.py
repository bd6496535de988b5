"""Reusable network blocks (residual/conv blocks, attention gate, ConvLSTM)."""
