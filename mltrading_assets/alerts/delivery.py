"""Where alerts go: a Slack-compatible incoming webhook (``{"text": …}``), a generic JSON
webhook, and e-mail over SMTP (STARTTLS and login when configured). Each destination is
tried on its own, with retries: one that is down does not keep the others from hearing."""

import json
import logging
import smtplib
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage

from tenacity import retry, stop_after_attempt, wait_exponential

log = logging.getLogger(__name__)

TIMEOUT_S = 10.0


class DeliveryError(RuntimeError):
    """A destination did not take the message after its retries."""


@dataclass(frozen=True)
class Message:
    """One message about one incident: ``status`` is open, update (it grew), reminder,
    recovered or info."""

    key: str
    kind: str
    severity: str
    status: str
    title: str
    body: str
    subjects: dict = field(default_factory=dict)

    @property
    def headline(self) -> str:
        prefix = {
            "open": "",
            "update": "more: ",
            "reminder": "still: ",
            "recovered": "recovered: ",
            "info": "",
        }
        return f"[mltrading {self.severity}] {prefix[self.status]}{self.title}"

    def text(self) -> str:
        return f"{self.headline}\n{self.body}".strip()

    def as_json(self) -> dict:
        return {
            "key": self.key,
            "kind": self.kind,
            "severity": self.severity,
            "status": self.status,
            "title": self.title,
            "text": self.text(),
            "subjects": self.subjects,
        }


def _post_json(url: str, payload: dict) -> None:
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:  # noqa: S310
        response.read()


def _post_slack(url: str, text: str) -> None:
    # slack_sdk's WebhookClient posts to any URL (a local receiver in tests, Mattermost, …).
    from slack_sdk.webhook import WebhookClient

    response = WebhookClient(url, timeout=int(TIMEOUT_S)).send(text=text)
    if response.status_code != 200:
        raise DeliveryError(f"webhook answered {response.status_code}: {response.body[:200]}")


@dataclass(frozen=True)
class Smtp:
    host: str
    port: int = 587
    security: str = "starttls"  # starttls | none
    username: str = ""
    password: str = ""
    sender: str = "mltrading@localhost"
    recipients: tuple[str, ...] = ()

    def send(self, subject: str, body: str) -> None:
        email = EmailMessage()
        email["Subject"] = subject
        email["From"] = self.sender
        email["To"] = ", ".join(self.recipients)
        email.set_content(body)
        with smtplib.SMTP(self.host, self.port, timeout=TIMEOUT_S) as server:
            if self.security == "starttls":
                server.starttls()
            if self.username:
                server.login(self.username, self.password)
            server.send_message(email)


@dataclass(frozen=True)
class Destinations:
    """Every configured destination; none configured means alerts are only logged."""

    slack_webhook_url: str = ""
    webhook_url: str = ""
    smtp: Smtp | None = None
    attempts: int = 3
    backoff_s: float = 1.0

    def names(self) -> list[str]:
        named = {
            "slack": self.slack_webhook_url,
            "webhook": self.webhook_url,
            "email": self.smtp is not None and bool(self.smtp.recipients),
        }
        return [name for name, on in named.items() if on]

    def _sender(self, name: str) -> Callable[[Message], None]:
        if name == "slack":
            return lambda m: _post_slack(self.slack_webhook_url, m.text())
        if name == "webhook":
            return lambda m: _post_json(self.webhook_url, m.as_json())
        return lambda m: self.smtp.send(m.headline, m.body)

    def send(self, message: Message, skip: frozenset[str] = frozenset()) -> dict[str, str]:
        """Deliver ``message`` to every destination not in ``skip``; returns the error of each
        destination that failed after its retries (empty: all delivered)."""
        errors = {}
        for name in self.names():
            if name in skip:
                continue
            send = retry(
                stop=stop_after_attempt(self.attempts),
                wait=wait_exponential(multiplier=self.backoff_s, max=10),
                reraise=True,
            )(self._sender(name))
            try:
                send(message)
            except Exception as error:  # any failure of a destination is reported, not raised
                log.warning("alert %s not delivered to %s: %s", message.key, name, error)
                errors[name] = f"{type(error).__name__}: {error}"[:300]
        return errors
