"""What a model directory holds and how it runs: the manifest, features, tokenizer and ONNX Runtime sessions."""
