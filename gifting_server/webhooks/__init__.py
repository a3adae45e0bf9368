"""Outgoing webhooks: a streamer's endpoints receive their streams' events, signed,
at least once and in order per stream (docs/webhooks.md)."""
