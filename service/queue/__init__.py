"""The queue between the sides: jobs, their codec, the in-process and the Redis Streams brokers."""
