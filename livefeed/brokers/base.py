"""The broker interface: what the hub and publishers may rely on, in writing.

A broker stores each tool's recent history, assigns event ids, and carries live
events between processes. Two implement it: :mod:`.memory` (embedded, one process)
and :mod:`.redis` (streams for history, pub/sub for live events). The behavioural
suite in tests/backends runs the same tests against both.

Guarantees every broker gives:

* **Atomic publish.** :meth:`Broker.publish` stores every event of a batch in each of
  its tools' histories and the firehose's, and publishes each live, or does none of
  it and raises :class:`~livefeed.errors.Unavailable` (or
  :class:`~livefeed.errors.BrokerError`). The one exception is
  :class:`~livefeed.errors.OutcomeUnknown`: the batch reached the backend, its
  answer was lost, and the backend could not be asked in time whether it was
  stored. Any event a subscriber can see live is already in history.
* **Ids.** Per channel (a tool, or ``*``), ids are ``<ms>-<seq>`` and strictly
  increasing in the order events were stored.
* **Idempotency.** An event whose ``idempotency_key`` was stored in the last 10
  minutes is not stored or delivered again; its original ids are returned.
* **Live order.** After :meth:`Broker.subscribe` returns, every event stored in that
  channel afterwards reaches :attr:`Broker.on_event` exactly once, in id order,
  while the broker stays connected. Events stored before it returned are in
  history. Nothing more is promised across a disconnection: the broker reports it
  through :attr:`Broker.on_connection`, and the hub recovers from history.
* **While the backend is away** publish and history raise ``Unavailable`` at once
  (nothing is queued), subscribe waits until it is back, and the broker reconnects
  by itself with backoff and jitter, re-subscribing every channel it holds.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass

from livefeed.envelope import Event
from livefeed.events import PreparedBatch
from livefeed.history import IdKey
from livefeed.types import EventId, ToolSlug

EventHandler = Callable[[Event], None]
ConnectionHandler = Callable[[bool], None]

Published = list[list[tuple[ToolSlug, EventId]]]
"""Per event of a batch, its (tool, id) pairs, in the order of its tools."""


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Events of one channel, oldest first.

    ``recovered`` is set only for reads ``since`` a cursor: False when events after
    the cursor were already trimmed (or the cursor was never issued by this
    history), in which case ``events`` starts at the oldest kept one.
    """

    events: list[Event]
    recovered: bool | None = None


def _ignore_event(event: Event) -> None:
    pass


def _ignore_connection(connected: bool) -> None:
    pass


class Broker(abc.ABC):
    """See the module docstring for what each method promises."""

    def __init__(self) -> None:
        self.on_event: EventHandler = _ignore_event
        """Called with every live event of a subscribed channel, on the event loop, in order."""
        self.on_connection: ConnectionHandler = _ignore_connection
        """Called with False when live delivery stops (events may be missed from then on)
        and with True once every held channel is subscribed again."""

    @property
    @abc.abstractmethod
    def connected(self) -> bool:
        """Whether the backend answered lately (drives /readyz)."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect. Does not fail if the backend is away: it keeps trying."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Disconnect and stop every background task."""

    @abc.abstractmethod
    async def publish(self, batch: PreparedBatch, ts: float) -> Published:
        """Store and publish a whole batch atomically; ``ts`` is the accept time."""

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Return once live events of ``channel`` flow to :attr:`on_event`."""

    @abc.abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop live events of ``channel``. Idempotent."""

    @abc.abstractmethod
    async def history(self, channel: str, limit: int, since: IdKey | None = None) -> HistoryPage:
        """The last ``limit`` events, or (with ``since``) up to ``limit`` events after it."""

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise :class:`~livefeed.errors.Unavailable` unless the backend answers now."""


PresenceEntries = dict[str, tuple[int, tuple[str, ...]]]
"""tool -> (subscriptions, distinct authenticated handles) of one process."""


class PresenceStore(abc.ABC):
    """Where each process publishes who is watching, so every process can merge them.

    Guarantees:

    * A process's entry for a tool stands until the process replaces or removes it,
      or until its deadline passes: an entry that is not refreshed expires, so the
      viewers of a process that died vanish by themselves (no sweeper).
    * :meth:`read` never returns an expired entry.
    """

    @abc.abstractmethod
    async def write(self, process: str, entries: PresenceEntries, ttl: float) -> None:
        """Set (or, with a count of 0, remove) this process's entries, valid ``ttl`` s."""

    @abc.abstractmethod
    async def read(self, tools: list[str]) -> dict[str, PresenceEntries]:
        """For each tool, every live process's entry: ``{tool: {process: entry}}``."""
