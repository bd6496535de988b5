"""Cases for training and evaluation: public ICH datasets and the synthetic generator.

Every loader turns its format into :class:`training.data.case.LabelledCase` objects (HU volume,
slices ordered inferior to superior, and whatever labels the dataset really has).
"""
