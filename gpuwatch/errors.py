"""The error a user can act on: the CLI prints it as one line, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or environment: say what was wrong and what to do."""
