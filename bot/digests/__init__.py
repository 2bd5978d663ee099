"""Digests: scheduled per-channel summaries of metrics, feedback and the request queue."""
