"""User-facing errors: one clear line, no traceback (unless --debug)."""

from __future__ import annotations


class ICLAudioError(Exception):
    """An error caused by the user's input or environment, explained in one line.

    The CLI prints ``error: <message>`` and exits non-zero; library users catch it like any
    exception. Subclasses only refine *what* went wrong so callers can branch on it.
    """

    exit_code = 2


class AudioError(ICLAudioError):
    """An audio input could not be read or is not usable (missing, empty, NaN, ...)."""


class ModelError(ICLAudioError):
    """A model could not be found or does not have the expected layout."""


class SupportSetError(ICLAudioError):
    """A support set (folder, CSV, dataset root or stored set) is missing or invalid."""


class CacheError(ICLAudioError):
    """Something stored on disk is damaged; the message says what to delete or rebuild."""
