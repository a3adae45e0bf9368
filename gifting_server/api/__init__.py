"""Thin edges: HTTP and WebSocket endpoints that parse, call a use-case and encode."""
