"""OpenAI's Chat Completions: the dialect the path itself speaks."""
