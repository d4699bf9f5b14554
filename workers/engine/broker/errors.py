"""The one error tree for broker failures, raised by every transport (nats.py bridge and the blocking wire).

Callers decide on one question: may the broker have stored the message anyway (`maybe_stored`)? A task row
whose publish certainly failed is failed at once; one whose publish may have landed stays pending, and the
sweeper republishes it under the same msg id (JetStream drops the duplicate).

Imports no Django.
"""

from __future__ import annotations


class BrokerError(Exception):
    """Publishing failed; `maybe_stored` says whether the broker may have the message anyway."""

    maybe_stored = False


class BrokerDown(BrokerError):
    """Not connected to NATS, or NATS is not configured: the message was certainly not stored."""


class PublishRejected(BrokerDown):
    """JetStream answered with an error (or an unreadable ack): the message was not stored."""


class PublishTimeout(BrokerError):
    """The ack did not come back in time: the message may be stored."""

    maybe_stored = True


class NoResponders(PublishTimeout):
    """Nothing listens on the subject yet: JetStream is restarting or the stream is being (re)created."""
