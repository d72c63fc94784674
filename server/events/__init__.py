"""Events from workers: the ingest loop (Redis Stream -> SQL), the in-process bus, and the SSE streams."""
