-- One row per finished Dagster run, written by the run-status sensors: the application's own
-- log of what ran, readable with plain SQL next to the data it produced.
CREATE TABLE IF NOT EXISTS public.system_logs (
    id          BIGSERIAL PRIMARY KEY,
    run_id      TEXT NOT NULL UNIQUE,
    job_name    TEXT NOT NULL,
    partitions  TEXT,
    status      TEXT NOT NULL CHECK (status IN ('SUCCESS', 'FAILURE', 'CANCELED')),
    started_at  TIMESTAMPTZ,
    ended_at    TIMESTAMPTZ,
    duration_s  DOUBLE PRECISION,
    error       TEXT,
    logged_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS system_logs_logged_at_idx ON public.system_logs (logged_at DESC);

-- What a run did that a reader of the data must know, e.g. which symbols' histories were
-- re-based after a split.
ALTER TABLE public.system_logs ADD COLUMN IF NOT EXISTS notes TEXT;
