"""Converters from model files shipped in packages to ONNX graphs (run once, cached)."""
