-- Hourly OHLCV bars; "timestamp" is the bar start in UTC.
CREATE TABLE IF NOT EXISTS public.market_data (
    symbol      TEXT NOT NULL,
    "timestamp" TIMESTAMPTZ NOT NULL,
    source      TEXT NOT NULL,
    open        DOUBLE PRECISION NOT NULL CHECK (open > 0),
    high        DOUBLE PRECISION NOT NULL CHECK (high > 0),
    low         DOUBLE PRECISION NOT NULL CHECK (low > 0),
    close       DOUBLE PRECISION NOT NULL CHECK (close > 0),
    adj_close   DOUBLE PRECISION,
    volume      DOUBLE PRECISION NOT NULL CHECK (volume >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT market_data_bar_key UNIQUE (symbol, "timestamp", source),
    CONSTRAINT market_data_high_low CHECK (high >= low)
);

-- Every query reads one symbol's bars by (symbol, "timestamp"); an index on "timestamp"
-- alone served none of them, yet the planner took it for a symbol's recent window and read
-- every symbol's bars in that window (~40 times the rows with 40 symbols), and each insert
-- paid for it.
DROP INDEX IF EXISTS public.market_data_time_idx;

-- The bar's session had not reached the bar's end when it was fetched: its values are
-- partial and are rewritten once it completes.
ALTER TABLE public.market_data ADD COLUMN IF NOT EXISTS in_progress BOOLEAN NOT NULL DEFAULT false;
