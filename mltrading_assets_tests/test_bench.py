"""The benchmark still runs end to end (tiny N; its figures are read from its output, never
asserted on here)."""

import os
import subprocess
import sys

from mltrading_assets.paths import PROJECT_ROOT


def test_bench_prints_a_machine_readable_line_per_scenario(server_url):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--symbols",
            "3",
            "--baseline",
            "--baseline-symbols",
            "1",
            "--database-url",
            server_url,
        ],
        cwd=PROJECT_ROOT,
        env={k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME",)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    server, *lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    # First the server setting the figures depend on most.
    assert server.split()[1:2] == ["scenario=server"] and "autovacuum=" in server
    scenarios = [line.split()[1] for line in lines]
    assert scenarios[:4] == [
        "scenario=full_load",
        "scenario=incremental",
        "scenario=incremental_without_dagster",
        "scenario=features_100",
    ]
    assert any("mode=baseline" in line for line in lines)
    for field in ("wall_s=", "per_symbol_s=", "rows_per_s=", "peak_connections=", "peak_rss_mb="):
        assert field in lines[0]


def test_the_table_layout_study_times_every_layout_and_names_the_indexes(server_url):
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--scenario", "table_layout", "--symbols", "3"]
        + ["--database-url", server_url],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    server, *lines = [line for line in result.stdout.splitlines() if line.startswith("BENCH ")]
    assert server.startswith("BENCH scenario=server autovacuum=")
    layouts = [field for line in lines for field in line.split() if field.startswith("layout=")]
    # Two rounds over the layouts, so that neither gains from the other's cache.
    assert layouts == ["layout=plain", "layout=by_symbol", "layout=by_month"] * 2
    assert "rows_per_table=" in lines[0]
    # The platform's per-symbol reads go through the table's unique key.
    assert "newest_bar=Index_Only_Scan:market_data_bar_key" in lines[-1]
