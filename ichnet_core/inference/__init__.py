"""Inference engines: one interface, several runtimes, shared pre/post-processing.

``base`` holds what every engine and caller shares (names, errors, protocols, limits), ``engine``
the factory :func:`~ichnet_core.inference.engine.create_engine`, ``auto`` the ``engine: auto``
probe, ``pipeline`` and ``staged`` the shared pre/post-processing and chunked execution. Engine
implementations (``torch_engine``, ``onnx_engine``, ``tensorrt_engine``) are imported only when
the factory builds them.

This package file imports nothing: importing ``ichnet_core.inference.base`` (the node's config
does, for :class:`~ichnet_core.inference.base.EngineName`) must not pull in torch. Nothing here
imports pydicom, so the engines also run on machines that only have the model stack (the GPU
benchmark).
"""
