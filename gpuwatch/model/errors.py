"""Errors the model raises for bad user input; the CLI prints them as one line."""

from __future__ import annotations

from collections.abc import Iterable


class UnknownIdError(KeyError):
    """An id not in a catalog; the message lists the close matches."""

    def __init__(self, kind: str, given: str, known: Iterable[str]) -> None:
        import difflib  # only on this error path: kept out of the NVML child, which never raises it

        known = sorted(known)
        close = difflib.get_close_matches(given.lower(), known, n=5, cutoff=0.4)
        hint = f"did you mean {', '.join(close)}?" if close else f"known: {', '.join(known)}"
        self.message = f"unknown {kind} {given!r}; {hint}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class ModelInputError(ValueError):
    """A value the model cannot use (negative batch, unreadable config.json, ...)."""
