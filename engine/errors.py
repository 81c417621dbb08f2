"""The engine's errors, each carrying the HTTP status the Engine API gives it.

Every layer raises these (or converts its own failures into them with
``raise ... from err``); the HTTP server turns them into
``{"message": "..."}`` with the matching status, so a client sees the same
text docker would print::

    raise NotFound(f"No such container: {name}")   # -> 404
"""

from __future__ import annotations


class EngineError(Exception):
    """Root of the engine's errors: a real server fault unless a subclass says."""

    status = 500

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class InvalidParameter(EngineError):
    """Bad input from the client: malformed JSON, a bad port or mount spec."""

    status = 400


class Unsupported(InvalidParameter):
    """A valid option this engine does not implement; the message names it."""


class Unauthorized(EngineError):
    status = 401


class Forbidden(EngineError):
    status = 403


class NotFound(EngineError):
    """No such container, image, volume, network or exec instance."""

    status = 404


class Conflict(EngineError):
    """A name already taken, an image in use, a container in the wrong state."""

    status = 409


class NotModified(EngineError):
    """Start of a running container, stop of a stopped one."""

    status = 304
