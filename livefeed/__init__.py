"""livefeed: a real-time feed server for community sites.

Public names only; everything else is internal and may change.
"""

from livefeed.errors import (
    BrokerError,
    InvalidEvent,
    LivefeedError,
    OutcomeUnknown,
    PublishRejected,
    Unavailable,
)
from livefeed.publisher import AsyncPublisher, Publisher

__version__ = "0.1.0"


def create_app(settings: object | None = None) -> object:
    """Build the Starlette app; see :func:`livefeed.app.create_app`."""
    from livefeed.app import create_app as _create_app

    return _create_app(settings)  # type: ignore[arg-type]


__all__ = [
    "AsyncPublisher",
    "BrokerError",
    "InvalidEvent",
    "LivefeedError",
    "OutcomeUnknown",
    "PublishRejected",
    "Publisher",
    "Unavailable",
    "__version__",
    "create_app",
]
