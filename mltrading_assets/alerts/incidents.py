"""Incidents: one message when a condition starts, a reminder while it lasts, one when it
clears. The state is a table (``public.alert_incidents``), so a restarted daemon neither
repeats a message nor forgets an open incident; a message a destination did not take stays
owed and is retried on the next evaluation, to that destination only."""

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from mltrading_assets.alerts.delivery import Destinations, Message
from mltrading_assets.db.tables import alert_incidents as table


@dataclass(frozen=True)
class Condition:
    """Something wrong now (or, for kind info, something that happened), under a stable key."""

    key: str
    severity: str
    title: str
    body: str
    subjects: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Sent:
    message: Message
    errors: dict[str, str]


def _open_rows(conn: sa.Connection, kind: str) -> dict[str, sa.Row]:
    rows = conn.execute(
        sa.select(table).where(
            table.c.kind == kind, table.c.resolved_at.is_(None) | table.c.pending.is_not(None)
        )
    )
    return {row.key: row for row in rows}


def _row(kind: str, condition: Condition) -> dict:
    """What a condition says, as its incident's columns."""
    return {
        "key": condition.key,
        "kind": kind,
        "severity": condition.severity,
        "title": condition.title,
        "body": condition.body,
        "subjects": condition.subjects,
    }


def _upsert(conn: sa.Connection, kind: str, condition: Condition, now: dt.datetime, **owed):
    values = {**_row(kind, condition), "updated_at": now, **owed}
    statement = postgresql.insert(table).values(**values)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["key"],
            set_={name: statement.excluded[name] for name in values if name != "key"},
        )
    )


def reconcile(
    conn: sa.Connection,
    kind: str,
    active: list[Condition],
    destinations: Destinations,
    now: dt.datetime,
    reminder: dt.timedelta,
    update_on_new_subjects: bool = False,
) -> list[Sent]:
    """Bring the incidents of ``kind`` in line with the conditions ``active`` now, then send
    what is owed. A key seen for the first time (or again after it cleared) opens an
    incident; one still open past ``reminder`` since its last message is reminded; an open
    one no longer active has recovered. With ``update_on_new_subjects``, an open incident
    that gained a subject (another failed run) says so at once, rather than at the reminder."""
    rows = _open_rows(conn, kind)
    seen = set()
    for condition in active:
        seen.add(condition.key)
        row = rows.get(condition.key)
        if row is None or row.resolved_at is not None:
            owed = {"pending": "open", "delivered": [], "opened_at": now, "resolved_at": None}
            owed["notified_at"] = None
        elif row.pending is None and row.notified_at and now - row.notified_at >= reminder:
            owed = {"pending": "reminder", "delivered": []}
        elif (
            update_on_new_subjects
            and row.pending is None
            and set(condition.subjects) - set(row.subjects)
        ):
            owed = {"pending": "update", "delivered": []}
        else:
            owed = {}  # still open, already told: keep what it owes, refresh what it says
        _upsert(conn, kind, condition, now, **owed)
    for key, row in rows.items():
        if key not in seen and row.resolved_at is None:
            conn.execute(
                table.update()
                .where(table.c.key == key)
                .values(resolved_at=now, pending="recovered", delivered=[], updated_at=now)
            )
    conn.commit()
    return deliver_pending(conn, kind, destinations, now)


def record_events(
    conn: sa.Connection,
    kind: str,
    events: list[Condition],
    destinations: Destinations,
    now: dt.datetime,
) -> list[Sent]:
    """One-off messages (a model promoted or refused): each key is sent once, ever."""
    for event in events:
        values = {**_row(kind, event), "opened_at": now, "resolved_at": now, "pending": "info"}
        conn.execute(postgresql.insert(table).values(**values).on_conflict_do_nothing())
    conn.commit()
    return deliver_pending(conn, kind, destinations, now)


def deliver_pending(
    conn: sa.Connection, kind: str, destinations: Destinations, now: dt.datetime
) -> list[Sent]:
    sent = []
    owed = conn.execute(
        sa.select(table).where(table.c.kind == kind, table.c.pending.is_not(None))
    ).all()
    for row in owed:
        message = Message(
            key=row.key,
            kind=kind,
            severity=row.severity,
            status=row.pending,
            title=row.title,
            body=row.body,
            subjects=row.subjects,
        )
        errors = destinations.send(message, skip=frozenset(row.delivered))
        delivered = sorted(set(row.delivered) | (set(destinations.names()) - set(errors)))
        values = (
            {"pending": None, "delivered": [], "notified_at": now}
            if not errors
            else {"delivered": delivered}
        )
        conn.execute(table.update().where(table.c.key == row.key).values(**values))
        conn.commit()
        sent.append(Sent(message, errors))
    return sent


def open_incidents(conn: sa.Connection, kind: str) -> dict[str, dict]:
    """The subjects of every open incident of ``kind`` (state some sensors build on)."""
    return {key: row.subjects for key, row in _open_rows(conn, kind).items() if not row.resolved_at}
