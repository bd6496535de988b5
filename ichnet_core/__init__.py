"""Imaging and model core of the ICHNet node: volumes, the synthetic head-CT generator, ICHNet and
its inference engines. Knows nothing about networking (see ../shared/DESIGN.md, layers)."""

__version__ = "0.1.0"
