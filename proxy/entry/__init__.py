"""The front door of /v1: the ASGI handler, its middleware, the views and URLs, key
authentication, health checks and the metrics endpoint."""
