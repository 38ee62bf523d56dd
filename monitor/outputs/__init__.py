"""Outputs (forwarders): every drift to the receivers that act on it, through a durable outbox.

`Outputs` (service.py) owns the configured outputs; its `Router` queues deliveries in the
transaction that stores each message, and a `Sender` per output delivers them in order.
"""

from monitor.outputs.service import DELIVERY_STATUSES, OutputConflict, Outputs
from monitor.outputs.spec import OutputSpec, SpecError, parse_spec

__all__ = [
    "DELIVERY_STATUSES",
    "OutputConflict",
    "OutputSpec",
    "Outputs",
    "SpecError",
    "parse_spec",
]
