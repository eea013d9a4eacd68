"""How a GPU is named where width is short: on its card, in a pane's heading, in the rack's table."""


def short_name(name: str) -> str:
    """``NVIDIA GeForce RTX 4090`` -> ``RTX 4090``: the vendor prefix costs width a card does not have."""
    for prefix in ("NVIDIA GeForce ", "NVIDIA "):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name
