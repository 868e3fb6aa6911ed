"""Errors the user can act on. Each carries a one-line message fit for a CLI or a notification."""


class FlowtuiError(Exception):
    """Base class: anything raised as a FlowtuiError is shown as one line, never a traceback."""


class InputError(FlowtuiError):
    """Bad input from the user: an unreadable image, an empty question, a bad option value."""


class ModelLoadError(FlowtuiError):
    """The model could not be found, is not cached, or is not a supported LVLM."""


class SnapshotError(FlowtuiError):
    """A snapshot file could not be written or read (corrupt, hostile, or a newer version)."""


class Cancelled(FlowtuiError):
    """A long engine call was cancelled by the caller."""


class RemoteError(FlowtuiError):
    """The remote engine failed: ssh, the remote command, the protocol, or the server."""


class ConnectionLost(RemoteError):
    """The connection to a remote engine dropped; what was computed before it stays valid."""
