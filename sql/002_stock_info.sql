-- The symbol universe. Deactivating a symbol stops its scheduled work; its data stays.
CREATE TABLE IF NOT EXISTS public.stock_info (
    symbol      TEXT PRIMARY KEY CHECK (symbol ~ '^[A-Z0-9.\-^=]{1,15}$'),
    name        TEXT,
    exchange    TEXT,
    active      BOOLEAN NOT NULL DEFAULT TRUE,
    added_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS stock_info_active_idx ON public.stock_info (symbol) WHERE active;
