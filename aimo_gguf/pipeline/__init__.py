"""aimo-gguf run: problems in, a submission, a journal and a summary out, with nothing lost."""
