"""GGUF files: the header, split parts, finding a model, importance matrices."""
