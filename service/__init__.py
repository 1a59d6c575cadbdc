"""The Paella Serve web service: HTTP API, micro-batcher, queues, GPU worker and metrics."""
