"""The upstream side: providers (one per kind of worker), the HTTP client, routing among
workers, their circuit breakers, capacity slots and health probes."""
