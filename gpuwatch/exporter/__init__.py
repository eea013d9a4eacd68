"""The Prometheus face."""
