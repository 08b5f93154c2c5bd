"""Telling people: what an alert says, where it goes (Slack-compatible and JSON webhooks,
e-mail) and how often (once per incident, a reminder, a "recovered" message). No Dagster
here: the sensors in ``defs/alerts`` decide what is wrong; this package says it."""

from mltrading_assets.alerts.delivery import DeliveryError, Destinations
from mltrading_assets.alerts.incidents import Condition, reconcile, record_events

__all__ = ["Condition", "DeliveryError", "Destinations", "reconcile", "record_events"]
