"""Foreground segmentation: rembg's U2-Net/IS-Net graphs in torch, and a tiny ONNX net for tests."""
