"""Docker images: cached multi-stage builds, layers through the store, cache mounts, exports."""
