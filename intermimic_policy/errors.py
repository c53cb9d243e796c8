"""The project's error base: the CLI prints these as one line, never as a traceback."""


class IntermimicError(Exception):
    """A user-facing error whose message names the offending input and the problem."""
