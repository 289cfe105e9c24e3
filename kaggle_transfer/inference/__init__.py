"""Torch-free prediction from ONNX files: numpy, OpenCV and onnxruntime only.

This is what runs inside a Kaggle notebook with the internet off. Nothing here imports torch
(a test runs it where importing torch fails).
"""
