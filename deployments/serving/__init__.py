"""Thin Ray Serve deployments: encoder replicas and the HTTP router."""
