"""The one billed path of every /v1 request that calls a model: plan and reserve its money,
admit it past the limits, choose a worker and fail over, relay the answer (whole or
streamed), and settle; ``Call`` is one request on that path."""
