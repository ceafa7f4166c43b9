"""The embeddings dialect."""
