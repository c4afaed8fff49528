"""aimo-gguf: batched olympiad-math solving with quantized GGUF models through llama.cpp."""

__version__ = "0.1.0"
