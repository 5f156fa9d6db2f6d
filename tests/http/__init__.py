"""Cross-cutting HTTP tests: the error shape, headers, request ids, rate limits, the OpenAPI document."""
