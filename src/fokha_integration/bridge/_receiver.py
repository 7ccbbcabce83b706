"""The sans-I/O core of the receiving side: the exactly-once decisions.

The reader (``_reader.py``) lists folders, reads and claims files; for each claimed
frame it asks a :class:`Receiver` what to do, giving it what the frame is, what the
journal knows of the id and whether a request of ours waits for it. The receiver
answers with a list of *actions* for the reader to carry out, in order:

- :class:`Quarantine` — move the file to ``bad/`` with this reason;
- :class:`Resolve` — give this reply to the request waiting for it;
- :class:`Begin` / :class:`Done` — journal records (``Done`` carries the reply sent);
- :class:`Deliver` — hand the message to the application; the reader reports the
  outcome back through :meth:`Receiver.handled`, which returns the remaining actions;
- :class:`SendReply` — write a reply frame (a new one, or the stored one again);
- :class:`Ack` — the file is dealt with: remove it (or keep it in ``done/``).

The receiver owns no file, task or clock: time and reply ids come in as arguments,
so every decision is tested with vectors (``tests/vectors/file-bridge-receiver/``),
without files or sleeps. It is not the frame codec (``_frame.py``), the folder
scanner (``_reader.py``) or the journal's storage (``_journal.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..models import canonical_json
from ._frame import CorruptFrameError, Frame
from ._journal import JournalEntry
from ._types import Counters, Message, Reply, ReplyStatus, Waiter, parse_message, redelivered

__all__ = [
    "Ack",
    "Action",
    "Begin",
    "Deliver",
    "Done",
    "Quarantine",
    "Receiver",
    "Resolve",
    "SendReply",
]


@dataclass(frozen=True, slots=True)
class Quarantine:
    """Move the file to ``bad/`` with this reason (and log it once)."""

    code: str
    detail: str


@dataclass(frozen=True, slots=True)
class Resolve:
    """Give ``reply`` to the request ``request_id`` that waits for it."""

    request_id: str
    reply: Reply


@dataclass(frozen=True, slots=True)
class Begin:
    """Journal: handling of ``message_id`` begins."""

    message_id: str


@dataclass(frozen=True, slots=True)
class Done:
    """Journal: ``message_id`` is handled; ``reply`` (JSON text) was its answer."""

    message_id: str
    reply_id: str | None = None
    reply: str | None = None


@dataclass(frozen=True, slots=True)
class Deliver:
    """Hand ``message`` to the application, then report with :meth:`Receiver.handled`."""

    message: Message


@dataclass(frozen=True, slots=True)
class SendReply:
    """Write the reply frame ``reply_id`` carrying ``reply`` (JSON text)."""

    reply_id: str
    reply: str


@dataclass(frozen=True, slots=True)
class Ack:
    """The claimed file is dealt with: remove it (or move it to ``done/``)."""


Action = Quarantine | Resolve | Begin | Done | Deliver | SendReply | Ack
"""One thing the reader must do for a frame."""

Outcome = Reply | None | Exception
"""What the application did with a delivered message: a reply, nothing, or an error."""


class Receiver:
    """Exactly-once decisions for the frames one bridge receives.

    ``sender`` is this side's name (put in the replies it builds); ``counters`` are
    the bridge's live counters (``received``, ``duplicates``, ``redelivered``,
    ``replies_received``, ``handler_errors`` are counted here).
    """

    def __init__(self, sender: str, counters: Counters) -> None:
        self.sender = sender
        self.counters = counters

    def wanted(
        self, frame: Frame, *, consumer: bool, waiter: Waiter | None, entry: JournalEntry | None
    ) -> bool:
        """Whether to claim ``frame`` now.

        With a ``consumer`` (a handler or a running ``messages()`` loop) everything is
        taken. Without one, only replies are: those a request of ours waits for and
        duplicates of replies already handled; everything else stays in ``new/``
        (nothing is lost, and requests are not blocked behind it). ``waiter`` is the
        request waiting for ``frame``'s ``in_reply_to`` and ``entry`` the journal's
        record of the frame's id.
        """
        if consumer:
            return True
        if frame.data.get("type") != "reply":
            return False
        if waiter is not None:
            return True
        return entry is not None and entry.state == "done"

    def seen(
        self, name: str, frame: Frame, entry: JournalEntry | None, waiter: Waiter | None
    ) -> list[Action]:
        """The actions for a claimed frame named ``name``.

        ``entry`` is what the journal knows of the frame's id, ``waiter`` the request
        of ours waiting for it (when it is a reply). When the list ends with
        :class:`Deliver`, report the outcome to :meth:`handled` for the rest.
        """
        try:
            message = parse_message(name, frame)
        except CorruptFrameError as exc:
            return [Quarantine(exc.code, exc.detail)]
        self.counters.received += 1
        if message.type == "reply":
            self.counters.replies_received += 1
            if waiter is not None:
                return self._reply_awaited(message, entry, waiter)
        if entry is not None and entry.state == "done":
            # Seen and handled before (a resend, or a crash before the acknowledgement):
            # not handled again; a request gets its stored reply again, same reply id.
            self.counters.duplicates += 1
            if message.is_request and entry.reply is not None and entry.reply_id is not None:
                return [SendReply(entry.reply_id, entry.reply), Ack()]
            return [Ack()]
        if entry is None:
            return [Begin(message.id), Deliver(message)]
        # Begun and never done: a previous run crashed while handling it.
        self.counters.redelivered += 1
        return [Deliver(redelivered(message))]

    def _reply_awaited(
        self, message: Message, entry: JournalEntry | None, waiter: Waiter
    ) -> list[Action]:
        assert message.in_reply_to is not None
        assert message.status is not None
        actions: list[Action] = []
        # An interim "accepted" while the waiter wants the final reply is consumed
        # here: the waiter keeps waiting. A duplicate reply still completes a waiter
        # (it may be a resend after a restart), but is journalled only once.
        if (message.status.final or not waiter.final) and not waiter.done:
            reply = Reply(
                message.status,
                message.details,
                message.id,
                message.in_reply_to,
                message.sender,
                message.sent_at,
            )
            actions.append(Resolve(message.in_reply_to, reply))
        if entry is None or entry.state != "done":
            actions.append(Done(message.id))
        actions.append(Ack())
        return actions

    def handled(
        self, message: Message, outcome: Outcome, *, now: float, reply_id: str
    ) -> list[Action]:
        """The actions after the application handled ``message``.

        ``outcome`` is the handler's reply (or ``None``), or the exception it raised;
        ``now`` the wall-clock time for the reply's ``sent_at``; ``reply_id`` the id
        a new reply gets. A one-way message whose handler failed goes to ``bad/`` (its
        journal record stays "begun": a restart hands it over again, flagged); a
        request always gets a reply (``failed`` when the handler raised or gave none).
        """
        if isinstance(outcome, Exception):
            self.counters.handler_errors += 1
            if not message.is_request:
                return [Quarantine("handler_error", repr(outcome)[:500])]
            outcome = Reply(ReplyStatus.FAILED, {"message": f"handler error: {outcome!r}"[:500]})
        if not message.is_request:
            return [Done(message.id), Ack()]
        if outcome is None:
            outcome = Reply(ReplyStatus.FAILED, {"message": "the handler gave no reply"})
        text = canonical_json(
            {
                "type": "reply",
                "kind": message.kind,
                "sender": self.sender,
                "sent_at": round(now, 6),
                "body": {},
                "in_reply_to": message.id,
                "status": ReplyStatus(outcome.status).value,
                "details": dict(outcome.details),
            }
        )
        return [Done(message.id, reply_id, text), SendReply(reply_id, text), Ack()]
