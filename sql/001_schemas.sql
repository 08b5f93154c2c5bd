-- Application tables live in public; Dagster's run/event/schedule storage in its own schema.
-- Dagster (dagster-postgres) cannot create its schema itself: it must exist before it connects.
CREATE SCHEMA IF NOT EXISTS dagster;
