"""Joins a telemetry snapshot with the model: roofline position, $/token, alerts."""
