"""The responses dialect."""
