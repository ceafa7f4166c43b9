"""The messages dialect."""
