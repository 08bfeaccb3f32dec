"""The errors cleaner raises.

Every message names the object, the cause and, where the user can do something, what to change.
``transient`` tells the Pub/Sub edge whether a redelivery could succeed (raise) or not (log, ack).
"""

from __future__ import annotations


class CleanerError(Exception):
    """Base of every error cleaner raises on purpose."""

    transient = False


class ConfigError(CleanerError):
    """A setting or policy is invalid; nothing was sent anywhere."""


class BadReference(CleanerError):
    """An image reference or repository path does not follow the distribution grammar."""


class RegistryError(CleanerError):
    """The registry answered with an error that retrying will not fix."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.code = code


class TransientError(RegistryError):
    """429, 5xx, timeouts or resets that outlived the retries: a later attempt may succeed."""

    transient = True


class PermissionDenied(RegistryError):
    """The credentials lack a permission; retrying is pointless until IAM changes."""


class AuthError(CleanerError):
    """Credentials could not be obtained or exchanged, or a token realm was refused."""


class IncompleteListing(CleanerError):
    """The repository could not be read whole, so no deletion is safe."""


class InUseUnavailable(CleanerError):
    """The set of images in use could not be read, so no deletion is safe."""
