"""Series to model input: geometry, Hounsfield units, windows, resampling."""
