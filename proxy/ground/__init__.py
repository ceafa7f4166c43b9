"""The wire vocabulary every room of the proxy shares: errors and JSON answers, the request
object, forwarded headers and hosts, token counting, metrics, the access log, caches and
shared state."""
