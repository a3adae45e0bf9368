"""The real-time side: local fan-out of stream events to WebSocket connections."""
