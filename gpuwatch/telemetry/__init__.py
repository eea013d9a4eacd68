"""Readings from the card (NVML, the simulated NVML, replay files, serving engines). Knows no face."""
