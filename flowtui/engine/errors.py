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


def first_line(exc: BaseException, limit: int | None = 300, default: str | None = None) -> str:
    """The first non-blank line of an exception's message, cut to `limit` characters (for
    one-line reasons quoting a library's error); `default` (else the type's name) when empty."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else (type(exc).__name__ if default is None else default)
    return text if limit is None else text[:limit]
