-- MLflow's backend store (model registry, training runs) in its own schema: it keeps an
-- Alembic version table, as Dagster does in schema dagster.
CREATE SCHEMA IF NOT EXISTS mlflow;

-- The champion model's probability that the close rises over its horizon, for the newest bar
-- of each active symbol. One row per bar: a bar's row is the live model's call while the bar
-- was the newest, so the table is also the record of what was predicted when.
CREATE TABLE IF NOT EXISTS public.model_predictions (
    symbol          TEXT NOT NULL,
    "timestamp"     TIMESTAMPTZ NOT NULL,
    source          TEXT NOT NULL,
    probability_up  DOUBLE PRECISION NOT NULL CHECK (probability_up BETWEEN 0 AND 1),
    model_name      TEXT NOT NULL,
    model_version   TEXT NOT NULL,
    horizon_bars    SMALLINT NOT NULL,
    bar_in_progress BOOLEAN NOT NULL,
    predicted_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT model_predictions_bar_key PRIMARY KEY (symbol, "timestamp", source),
    CONSTRAINT model_predictions_bar_fkey FOREIGN KEY (symbol, "timestamp", source)
        REFERENCES public.feature_engineered_data (symbol, "timestamp", source) ON DELETE CASCADE
);

-- Promotions, refusals and rollbacks of the model are logged beside the runs.
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_constraint
        WHERE conname = 'system_logs_status_check'
          AND position('PROMOTED' IN pg_get_constraintdef(oid)) > 0
    ) THEN
        ALTER TABLE public.system_logs DROP CONSTRAINT IF EXISTS system_logs_status_check;
        ALTER TABLE public.system_logs ADD CONSTRAINT system_logs_status_check CHECK (
            status IN ('SUCCESS', 'FAILURE', 'CANCELED', 'PROMOTED', 'REFUSED', 'ROLLED_BACK'));
    END IF;
END $$;
