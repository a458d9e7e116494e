"""Models: specs and identity, the towers (ONNX image, numpy text), tokenizers, embedders."""
