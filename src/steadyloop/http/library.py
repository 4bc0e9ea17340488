"""The client library the upstreams are built on: httpx (the default) or httpx2.

httpx2 is httpx's maintained continuation: the same API and transport interface under the
module name `httpx2`, with classes of its own (an `httpx2.ReadTimeout` is not an
`httpx.ReadTimeout`). Everything in this package that needs a class of the library (the
clients, the default transport, the exception raised at the deadline) asks `library(name)`;
the rest works on both through their shared attributes. See docs/http.md for the choice.
"""

from __future__ import annotations

import functools
import importlib
import sys
from dataclasses import dataclass
from types import ModuleType

import httpx

__all__ = ["DeadlineExceeded", "Library", "byte_stream_types", "library"]


class DeadlineExceeded(httpx.TimeoutException):
    """The call's deadline passed while an attempt was running (or before one could start).

    With httpx2 the exception raised is also an `httpx2.TimeoutException`.
    """


@dataclass(frozen=True, slots=True)
class Library:
    """One client library and the classes this package needs from it."""

    name: str
    module: ModuleType
    #: What this library's transports raise for a failed exchange (retried or not).
    transport_error: type[Exception]
    #: Raised when a call's deadline passes; a `DeadlineExceeded` and a library timeout.
    deadline_exceeded: type[DeadlineExceeded]


@functools.cache
def library(name: str) -> Library:
    """`httpx` or `httpx2`; an import error names the package to install."""
    if name == "httpx":
        return Library("httpx", httpx, httpx.TransportError, DeadlineExceeded)
    if name != "httpx2":
        raise ValueError(f"unknown HTTP client library {name!r}: use httpx or httpx2")
    try:
        module = importlib.import_module("httpx2")
    except ImportError:
        raise ImportError(
            "HTTP_CLIENT=httpx2 needs the httpx2 package: pip install 'steadyloop[httpx2]'"
        ) from None
    # Both hierarchies: `except httpx2.TimeoutException` and `except DeadlineExceeded` work.
    deadline = type(
        "DeadlineExceeded",
        (module.TimeoutException, DeadlineExceeded),
        {"__module__": __name__, "__doc__": DeadlineExceeded.__doc__},
    )
    return Library("httpx2", module, module.TransportError, deadline)


def byte_stream_types() -> tuple[type, ...]:
    """The in-memory request body classes (replayable bodies) of httpx, and of httpx2 if loaded."""
    httpx2 = sys.modules.get("httpx2")
    if httpx2 is None:
        return (httpx.ByteStream,)
    return (httpx.ByteStream, httpx2.ByteStream)
