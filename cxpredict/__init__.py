"""CX Predict's command line and settings. The product itself lives in ``features``, ``training`` and ``serving``."""

__version__ = "0.1.0"
