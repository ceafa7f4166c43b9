"""The self-service API's views, one module per resource. Each is thin: an input serializer
checks the wire format, a selector or service does the work, an output serializer shapes the
answer."""
