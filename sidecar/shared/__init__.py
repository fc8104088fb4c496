"""State shared by replicas: the Redis connection, bounded and fail-open."""
