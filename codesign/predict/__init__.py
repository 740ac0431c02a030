"""Prediction of latency and energy from profiles; the ONNX graph front end lives in graph.py."""
