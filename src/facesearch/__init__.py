"""facesearch: self-hosted, accountable face search."""

__version__ = "0.1.0"
