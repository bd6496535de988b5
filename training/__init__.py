"""Training, evaluation and baselines for ICHNet.

``training`` imports ``ichnet_core`` (model, windows, synthetic generator) and never ``dicom_node``.
Entry points: ``ichnet-train`` and ``ichnet-eval`` (:mod:`training.cli`).
"""
