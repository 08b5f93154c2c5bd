-- What the alert sensors have told people, so that an incident is announced once, reminded
-- after a while and closed with a "recovered" message, across restarts of the daemon.
-- A row is one incident: open while resolved_at is NULL. "pending" is the message still
-- owed (open, update, reminder, recovered, info) and "delivered" the destinations that already have
-- it, so a destination that failed is retried without repeating it to the others.
CREATE TABLE IF NOT EXISTS public.alert_incidents (
    key          TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    severity     TEXT NOT NULL,
    title        TEXT NOT NULL,
    body         TEXT NOT NULL,
    subjects     JSONB NOT NULL DEFAULT '{}',
    opened_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    notified_at  TIMESTAMPTZ,
    resolved_at  TIMESTAMPTZ,
    pending      TEXT CHECK (pending IN ('open', 'update', 'reminder', 'recovered', 'info')),
    delivered    JSONB NOT NULL DEFAULT '[]',
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS alert_incidents_kind_idx ON public.alert_incidents (kind)
    WHERE resolved_at IS NULL OR pending IS NOT NULL;
