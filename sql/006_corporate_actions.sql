-- Splits and dividends per symbol and source, as the source reported them. A split's value
-- is new shares per old share (2 for 2:1); a dividend's is the amount per share.
CREATE TABLE IF NOT EXISTS public.corporate_actions (
    symbol      TEXT NOT NULL,
    source      TEXT NOT NULL,
    ex_date     DATE NOT NULL,
    kind        TEXT NOT NULL CHECK (kind IN ('split', 'dividend')),
    value       DOUBLE PRECISION NOT NULL CHECK (value > 0),
    first_seen  TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT corporate_actions_key PRIMARY KEY (symbol, source, ex_date, kind)
);
