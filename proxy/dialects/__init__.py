"""One folder per client dialect of the /v1 API: how its requests are parsed into the one
path, and how the path's answers are rendered back."""
