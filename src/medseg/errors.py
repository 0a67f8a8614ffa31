"""Errors medseg raises on bad input. Every message names the file (or argument) and what to do."""


class MedsegError(Exception):
    """Base class of all errors medseg raises on purpose."""


class InputError(MedsegError, ValueError):
    """An input file or argument is unreadable, inconsistent or out of range."""


class CheckpointError(MedsegError):
    """A checkpoint is missing, untrusted (pickled code) or belongs to another model."""
