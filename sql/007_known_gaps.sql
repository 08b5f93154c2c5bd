-- Hours of a session a source was asked for again and still has no bar for (a halt, no
-- trades): known, so they are neither fetched again every run nor reported as missing.
CREATE TABLE IF NOT EXISTS public.known_gaps (
    symbol      TEXT NOT NULL,
    source      TEXT NOT NULL,
    "timestamp" TIMESTAMPTZ NOT NULL,
    first_seen  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT known_gaps_key PRIMARY KEY (symbol, source, "timestamp")
);
