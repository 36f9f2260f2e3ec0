"""A client for container registries: credentials and auth, HTTP, media types, image copy."""
