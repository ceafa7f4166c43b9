"""The subcommand groups of ``manage.py router``; ``registry`` lists them."""
