"""The GPU side: the worker loop, the micro-batcher and the executor over the Pipeline."""
