"""gifting_server: a self-hostable real-time live-stream gifting server."""

__version__ = "0.1.0"
