"""The Dagster UI over the benchmark's universe, timed in Debian's Chromium.

After the ticks of ``scheduled_load``, with every symbol a partition holding an hour's runs,
the pages a user opens are loaded one after the other and timed from the navigation (or the
click) to the moment their content is on screen: not the page's frame, but the element that
needs the partition data (partition health counts, a materialization's metadata, a run's last
event). Each page
is a full load of the UI, the way a link or a bookmark opens it, so the figure includes the
browser's work as well as the webserver's; the median of three loads is printed. A
screenshot of each lands under ``test-output/bench-ui/``.

The backfill page is of a backfill of every partition launched from the Materialize dialog
(the dialog's own figure is the click on "Materialize…" to the partition count of "All"),
and canceled as soon as its page is timed, so that its runs do not slow the other pages.
"""

import contextlib
import re
import shutil
import statistics
import time
from collections.abc import Callable

from mltrading_assets.paths import PROJECT_ROOT

SHOTS = PROJECT_ROOT / "test-output" / "bench-ui"
# Longer than any page should take, so that a slow page is measured rather than failed.
PATIENCE_MS = 120_000
# Each page is loaded this many times; the median is its figure.
REPEAT = 3


def chromium() -> str | None:
    return shutil.which("chromium")


def time_pages(
    base: str,
    symbol: str,
    ranged_run_id: str,
    partitions: int,
    newest_backfill: Callable[[], str],
) -> dict[str, float | None]:
    """Seconds from navigation to content for each page (``None``: it never showed)."""
    from playwright.sync_api import Locator, sync_playwright

    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    seconds: dict[str, float | None] = {}
    # Written either way, depending on the page.
    count = rf"({partitions:,}|{partitions})"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        # Dagster's "Join the community" prompt would cover the dialog.
        context.add_init_script("window.localStorage.setItem('communityNux', '1')")
        page = context.new_page()
        page.set_default_timeout(PATIENCE_MS)

        def timed(
            name: str,
            act: Callable[[], None],
            content: Callable[[], Locator],
            reset: Callable[[], None] = lambda: None,
        ) -> None:
            took = []
            for attempt in range(REPEAT):
                if attempt:
                    reset()
                started = time.perf_counter()
                try:
                    act()
                    content().wait_for(state="visible")
                except Exception as error:  # a page that never shows is a figure, not a crash
                    print(f"ui page {name}: no content after {PATIENCE_MS / 1000:.0f} s ({error})")
                    seconds[name] = None
                    break
                took.append(time.perf_counter() - started)
            else:
                seconds[name] = statistics.median(took)
            with contextlib.suppress(Exception):
                page.screenshot(path=SHOTS / f"{len(seconds):02d}-{name}.png")

        def go(path: str) -> Callable[[], None]:
            return lambda: page.goto(base + path, wait_until="commit")

        # The first load fetches and compiles the UI's scripts; a user pays that once.
        page.goto(base + "/assets", wait_until="load")
        page.get_by_text("market_data").first.wait_for(state="visible")

        timed(
            "asset_overview",
            go("/assets/market_data"),
            # The latest materialization's metadata table.
            lambda: page.get_by_text("bars_fetched").first,
        )
        timed(
            "partitions_tab",
            go("/assets/market_data?view=partitions"),
            # The partition health counts.
            lambda: page.get_by_text(re.compile(rf"^Materialized \({count}\)$")).first,
        )
        timed(
            "partition_page",
            go(f"/assets/market_data?view=partitions&partition={symbol}"),
            lambda: page.get_by_text("rows_written").first,
        )
        timed(
            "ranged_run_page",
            go(f"/runs/{ranged_run_id}"),
            # The run's log on screen: the list draws only the rows in view, the top ones
            # (RUN_START), the last (RUN_SUCCESS) once scrolled to its end, or, where the
            # scrolling stopped between them (seen at 500 partitions), materializations.
            lambda: (
                page.get_by_text(re.compile(r"^(RUN_START|RUN_SUCCESS|ASSET_MATERIALIZATION)$"))
                .filter(visible=True)
                .first
            ),
        )
        timed(
            "lineage",
            go("/asset-groups"),
            # The asset group's node in the graph (the first "models" is in the side list).
            lambda: page.get_by_text("models", exact=True).filter(visible=True).nth(1),
        )
        before = newest_backfill()
        _time_dialog_and_launch(page, timed, go, count)
        backfill = _wait_for(lambda: (newest := newest_backfill()) != before and newest)
        try:
            timed(
                "backfill_page",
                go(f"/runs/b/{backfill}"),
                lambda: page.get_by_text("% completed").first,
            )
        finally:
            _cancel_backfill(base, backfill)
        browser.close()
    return seconds


def _time_dialog_and_launch(page, timed, go, count: str) -> None:
    """The Materialize dialog with every partition chosen, timed; then its backfill."""
    go("/assets/market_data")()
    page.get_by_role("button", name="Materialize…").wait_for(state="visible")
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")

    def choose_all() -> None:
        page.get_by_role("button", name="Materialize…").click()
        dialog.get_by_role("button", name="All", exact=True).click()

    timed(
        "materialize_dialog",
        choose_all,
        lambda: dialog.get_by_text(re.compile(rf"^{count} partitions selected$")).first,
        reset=lambda: dialog.get_by_role("button", name="Cancel").click(),
    )
    dialog.get_by_role("button", name="Launch backfill").click()


def _wait_for(value: Callable[[], str], timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := value():
            return found
        time.sleep(0.5)
    raise SystemExit(f"the UI launched no backfill in {timeout} s (screenshots: {SHOTS})")


def _cancel_backfill(base: str, backfill: str) -> None:
    """Cancel it as the backfill page's button does (the UI's GraphQL mutation)."""
    import requests

    requests.post(
        f"{base}/graphql",
        json={
            "query": "mutation($id: String!) { cancelPartitionBackfill(backfillId: $id) "
            "{ __typename } }",
            "variables": {"id": backfill},
        },
        timeout=60,
    ).raise_for_status()
