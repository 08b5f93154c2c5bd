"""Pictures and tables attached to materializations (Pillow; no Dagster here)."""

from mltrading_assets.charts.feature_chart import (
    CHART_BARS,
    CHART_COLUMNS,
    chart_markdown,
    feature_chart_png,
    latest_values_markdown,
)

__all__ = [
    "CHART_BARS",
    "CHART_COLUMNS",
    "chart_markdown",
    "feature_chart_png",
    "latest_values_markdown",
]
