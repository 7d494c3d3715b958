"""Market NN Plus Ultra: deep-learning trading agents from one SQLite file of market data."""

__all__ = ["__version__"]

__version__ = "0.1.0"
