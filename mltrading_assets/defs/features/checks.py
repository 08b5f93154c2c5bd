"""Checks of the stored features, one evaluation per symbol partition."""

from mltrading_assets.defs.features.assets import feature_engineered_data
from mltrading_assets.features.contract import ALL_FEATURE_COLUMNS, INTEGER_COLUMNS
from mltrading_assets.lib.resources import PostgresResource
from mltrading_assets.lib.symbol_checks import (
    ERROR,
    Results,
    Scope,
    by_symbol,
    per_symbol,
    query,
    symbol_check,
)


def _float_columns() -> list[str]:
    return [c for c in ALL_FEATURE_COLUMNS if c not in INTEGER_COLUMNS]


def feature_range_problems(database: PostgresResource, scope: Scope) -> Results:
    non_finite = " OR ".join(f"{c} IN ('NaN', 'Infinity', '-Infinity')" for c in _float_columns())
    frame = by_symbol(
        database,
        "count(*) FILTER (WHERE williams_r < -100 OR williams_r > 0) AS williams_out, "
        f"count(*) FILTER (WHERE {non_finite}) AS non_finite",
        scope,
        table="feature_engineered_data",
    )
    return per_symbol(
        scope,
        frame,
        lambda r: (
            r.williams_out == 0 and r.non_finite == 0,
            {"williams_r_out_of_range": int(r.williams_out), "non_finite_rows": int(r.non_finite)},
        ),
    )


def row_count_problems(database: PostgresResource, scope: Scope) -> Results:
    frame = query(
        database,
        "SELECT m.symbol, count(*) AS bars, count(f.symbol) AS feature_rows "
        "FROM public.market_data m LEFT JOIN public.feature_engineered_data f "
        'USING (symbol, "timestamp", source) '
        'WHERE m.symbol = ANY(:symbols) AND m.source = :source AND m."timestamp" >= :since '
        "GROUP BY m.symbol",
        symbols=scope.symbols,
        source=scope.source,
        since=scope.since,
    )
    return per_symbol(
        scope,
        frame,
        lambda r: (
            r.bars == r.feature_rows,
            {"bars": int(r.bars), "feature_rows": int(r.feature_rows)},
        ),
    )


feature_checks = [
    symbol_check(
        feature_engineered_data,
        "feature_ranges",
        ERROR,
        feature_range_problems,
        "williams_r within [-100, 0]; no NaN or infinite value stored in any feature.",
    ),
    symbol_check(
        feature_engineered_data,
        "rows_match_bars",
        ERROR,
        row_count_problems,
        "One feature row for every stored bar.",
    ),
]
