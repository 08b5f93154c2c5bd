"""The UI flows the README recommends, clicked through in a real browser: Debian's Chromium
driven by Playwright, against `mltrading ui` on the embedded database.

Each step saves a screenshot under test-output/ui/<test>/ (kept when a test fails).
"""

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import sqlalchemy as sa

from mltrading_assets.paths import PROJECT_ROOT
from mltrading_assets_tests.conftest import free_port, run_cli
from mltrading_assets_tests.test_operations import MARKET_DATA_CHECKS

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = PROJECT_ROOT / "test-output" / "ui"
AS_OF = "2026-11-20T21:00:00Z"
UI_SYMBOLS = ["UIA", "UIB", "UIC"]

if not Path(CHROMIUM).exists():
    if os.environ.get("CI"):
        raise RuntimeError("Debian's chromium is missing: `apt-get install chromium`")
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

# Pages of a busy 2-core machine (CI: the daemon, the code server and runs share it) can take
# longer than Playwright's 5 s to show what a test waits for.
expect.set_options(timeout=20_000)


class UI:
    """`mltrading ui` on the embedded server of a fresh MLTRADING_HOME."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.charts_port = free_port()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("MLTRADING_DATABASE_URL", "DAGSTER_HOME")
        }
        self.env.update(
            MLTRADING_HOME=str(home),
            MLTRADING_SYNTHETIC_AS_OF=AS_OF,
            MLTRADING_WORKERS="2",
            # The test plays the user; no hourly tick should start runs of its own.
            MLTRADING_SCHEDULES="off",
            # Runs started by the CLI link to the same chart server as the UI's own.
            MLTRADING_CHARTS_URL=f"http://127.0.0.1:{self.charts_port}/charts",
        )
        self.cli("db", "init")
        self.url = self.cli("db", "url").stdout.strip()
        self.log = home / "ui.log"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mltrading_assets.cli", "ui", "--port", str(self.port)]
            + ["--charts-port", str(self.charts_port)],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=self.log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli(self.env, *args)

    def python(self, code: str) -> str:
        """Run ``code`` against this UI's instance (the user's own Python, say); its output."""
        env = {
            **self.env,
            "MLTRADING_DATABASE_URL": self.url,
            "DAGSTER_HOME": str(self.home / "dagster_home"),
        }
        done = subprocess.run(
            [sys.executable, "-c", code],
            env=env,
            check=True,
            timeout=120,
            capture_output=True,
            text=True,
        )
        return done.stdout

    def sql(self, statement: str, **params) -> list[tuple]:
        engine = sa.create_engine(self.url)
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.execute(sa.text(statement), params)]
        finally:
            engine.dispose()

    def wait_until(self, what: str, condition, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            if condition():
                return
            time.sleep(1)
        raise AssertionError(f"not in {timeout} s: {what}\n{self.log.read_text()[-3000:]}")

    def materialized(self, asset: str) -> set[str]:
        rows = self.sql(
            "SELECT DISTINCT partition FROM dagster.event_logs "
            "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND asset_key = :key",
            key=f'["{asset}"]',
        )
        return {row[0] for row in rows}

    def check_results(self, run_id: str) -> dict[tuple[str, str], bool]:
        rows = self.sql(
            "SELECT event FROM dagster.event_logs "
            "WHERE run_id = :run AND dagster_event_type = 'ASSET_CHECK_EVALUATION'",
            run=run_id,
        )
        results = {}
        for (event,) in rows:
            data = json.loads(event)["dagster_event"]["event_specific_data"]
            results[(data["check_name"], data["partition"])] = data["success"]
        return results

    def latest_metadata(self, asset: str) -> dict:
        """The metadata values of ``asset``'s latest materialization, as the UI shows them."""
        code = (
            "import json, dagster as dg\n"
            "with dg.DagsterInstance.get() as i:\n"
            f"    e = i.get_latest_materialization_event(dg.AssetKey({asset!r}))\n"
            "    m = e.asset_materialization.metadata\n"
            "    print(json.dumps({k: v.value for k, v in m.items()}, default=str))\n"
        )
        return json.loads(self.python(code).splitlines()[-1])

    def finished_run(self, job: str) -> tuple[str, str]:
        """Wait for the newest run of ``job`` to end; its id and status."""

        def newest() -> tuple[str, str]:
            rows = self.sql(
                "SELECT run_id, status FROM dagster.runs WHERE pipeline_name = :job "
                "ORDER BY create_timestamp DESC LIMIT 1",
                job=job,
            )
            return rows[0] if rows else ("", "")

        self.wait_until(f"a run of {job} ended", lambda: newest()[1] in ("SUCCESS", "FAILURE"))
        return newest()

    def runs_of_partition(self, partition: str) -> list[tuple]:
        """(run id, status) of every run over ``partition``, alone or as a range's end."""
        return self.sql(
            "SELECT DISTINCT r.run_id, r.status, r.create_timestamp FROM dagster.runs r "
            "JOIN dagster.run_tags t ON t.run_id = r.run_id WHERE t.value = :p AND t.key IN "
            "('dagster/partition', 'dagster/asset_partition_range_start', "
            "'dagster/asset_partition_range_end') ORDER BY r.create_timestamp",
            p=partition,
        )

    def runs(self) -> list[tuple]:
        return self.sql("SELECT run_id, status FROM dagster.runs ORDER BY create_timestamp")

    def tree(self) -> list[psutil.Process]:
        """The `mltrading ui` process and everything it started (`dagster dev` runs in a
        session of its own, so a process group would not cover it)."""
        root = psutil.Process(self.process.pid)
        return [root, *root.children(recursive=True)]


def still_running(processes: list[psutil.Process]) -> list[str]:
    left = []
    for process in processes:
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                left.append(" ".join(process.cmdline())[:100])
    return left


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    server = UI(tmp_path_factory.mktemp("ui-home"))
    try:
        server.wait_until(
            "the UI answers with the code location loaded",
            lambda: _location_loaded(server.base),
            timeout=180,
        )
        yield server
    finally:
        if server.process.poll() is None:
            for process in server.tree():
                with contextlib.suppress(psutil.Error):
                    process.kill()
        with contextlib.suppress(AssertionError):
            server.cli("db", "stop")


def _location_loaded(base: str) -> bool:
    import urllib.request

    query = (
        b'{"query": "{ workspaceOrError { ... on Workspace { locationEntries { loadStatus } } } }"}'
    )
    request = urllib.request.Request(
        f"{base}/graphql", data=query, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return b'"LOADED"' in answer.read()
    except OSError:
        return False


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Steps:
    """One screenshot per step, numbered, under the test's own folder."""

    def __init__(self, page: Page, folder: Path) -> None:
        self.page, self.folder, self.count = page, folder, 0
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)

    def shot(self, name: str) -> None:
        self.count += 1
        self.page.screenshot(path=self.folder / f"{self.count:02d}-{name}.png", full_page=True)


@pytest.fixture
def page(browser, ui, request):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    # Dagster's "Join the community" prompt would cover the first dialog of every session.
    context.add_init_script("window.localStorage.setItem('communityNux', '1')")
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.steps = Steps(page, SCREENSHOTS / request.node.name)
    yield page
    with contextlib.suppress(Exception):
        page.steps.shot("end")
    context.close()


def open_page(page: Page, ui: UI, path: str) -> None:
    page.goto(ui.base + path)
    skip = page.get_by_role("button", name="Skip")
    with contextlib.suppress(Exception):
        skip.click(timeout=3000)


def launch_one_partition(page: Page, symbol: str, shot: str, add: bool = False) -> None:
    """On an asset page: Materialize…, only ``symbol`` (first added with "Add a partition"
    when ``add``), Launch."""
    page.get_by_role("button", name="Materialize…").click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize")
    dialog.get_by_role("button", name="Custom").click()
    if add:
        dialog.get_by_text("Add a partition").click()
        page.get_by_placeholder("name").fill(symbol)
        page.get_by_role("button", name="Save").click()
    # The custom selection opens empty or with every partition (it varies): make it one.
    page.wait_for_timeout(1000)
    if dialog.locator(f'[data-tooltip="{symbol}"]').count() == 0:
        dialog.get_by_text("Select a partition or create one").click()
        # A menu item, or (also seen) a row with a checkbox whose text is the name.
        item = page.get_by_role("menuitem", name=symbol, exact=True)
        item.or_(page.get_by_text(symbol, exact=True)).first.click()
        dialog.get_by_text("Launch runs to materialize").first.click()  # close the list
    for other in UI_SYMBOLS:
        chosen = dialog.locator(f'[data-tooltip="{other}"]')
        if other != symbol and chosen.count():
            chosen.get_by_role("img", name="close").click()
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    page.steps.shot(shot)
    dialog.get_by_role("button", name="Launch 1 run").click()


def test_materialize_one_partition_from_the_asset_page(ui, page):
    ui.python(
        "import dagster as dg\n"
        "with dg.DagsterInstance.get() as i:\n"
        f"    i.add_dynamic_partitions('symbols', {UI_SYMBOLS!r})\n"
    )
    open_page(page, ui, "/assets/market_data")
    page.steps.shot("asset-page")
    launch_one_partition(page, "UIA", "one-partition-chosen")
    ui.wait_until("UIA's bars are materialized", lambda: "UIA" in ui.materialized("market_data"))
    ui.wait_until("the run ended", lambda: ui.runs()[0][1] in ("SUCCESS", "FAILURE"))
    assert [status for _, status in ui.runs()][:1] == ["SUCCESS"]
    # The asset's checks ran with it, for UIA (they used to be SKIPPED).
    [(run_id, _)] = ui.runs()[:1]
    assert ui.check_results(run_id) == {(check, "UIA"): True for check in MARKET_DATA_CHECKS}
    open_page(page, ui, "/assets/market_data?view=partitions&partition=UIA")
    expect(page.get_by_text("rows_written").first).to_be_visible()
    page.steps.shot("partition-materialized")


def test_runs_from_the_terminal_show_on_the_overview_timeline(ui, page):
    ui.cli("materialize", "--symbols", "UIA", "--asset", "market_data")
    open_page(page, ui, "/overview/activity/timeline")
    # Only the terminal's run is of market_data_job so far (the UI's are __ASSET_JOB).
    expect(page.get_by_role("link", name="market_data_job")).to_be_visible()
    page.steps.shot("timeline")


def test_materialize_all_ends_green_with_both_assets_for_every_symbol(ui, page):
    open_page(page, ui, "/locations/mltrading_assets/asset-groups/market")
    page.get_by_role("button", name="Materialize all…").click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize 2 assets")
    dialog.get_by_role("button", name="All", exact=True).click()
    expect(dialog.get_by_text(f"{len(UI_SYMBOLS)} partitions")).to_be_visible()
    page.steps.shot("all-partitions")
    dialog.get_by_role("button", name="Launch backfill").click()

    def backfill_status() -> str:
        rows = ui.sql("SELECT status FROM dagster.bulk_actions ORDER BY id DESC LIMIT 1")
        return rows[0][0] if rows else ""

    ui.wait_until("the backfill ended", lambda: backfill_status().startswith("COMPLETED"))
    # The backfill's last say comes a daemon tick after its runs: wait for it to settle.
    time.sleep(5)
    assert backfill_status() == "COMPLETED_SUCCESS"
    assert ui.materialized("market_data") >= set(UI_SYMBOLS)
    assert ui.materialized("feature_engineered_data") >= set(UI_SYMBOLS)
    assert ui.sql(
        "SELECT count(*) FROM dagster.event_logs WHERE dagster_event_type = 'STEP_FAILURE'"
    ) == [(0,)]
    [(backfill_id,)] = ui.sql("SELECT key FROM dagster.bulk_actions ORDER BY id DESC LIMIT 1")
    open_page(page, ui, f"/runs/b/{backfill_id}")
    expect(page.get_by_text("100% completed")).to_have_count(2)
    text = page.inner_text("body")
    assert re.search(r"Status\s+Succeeded", text), text
    # targeted, in progress, succeeded, failed: the features step is not reported failed.
    n = len(UI_SYMBOLS)
    for asset in ("market_data", "feature_engineered_data"):
        assert re.search(rf"{asset}\s+100% completed\s+{n}\s+0\s+{n}\s+0", text), text
    page.steps.shot("backfill-succeeded")
    page.steps.shot("backfill-green-in-runs")


def test_a_feature_partition_shows_its_chart(ui, page):
    open_page(page, ui, "/assets/feature_engineered_data?view=partitions&partition=UIB")
    expect(page.get_by_text("latest_values").first).to_be_visible()
    page.steps.shot("partition-page")
    # A link, not a picture, in the event: short enough for the UI to render it in the
    # metadata table; the chart server `mltrading ui` runs draws it as the page asks.
    row = page.locator("tr", has=page.get_by_text("chart", exact=True))
    chart_url = f"http://127.0.0.1:{ui.charts_port}/charts/UIB.png?"
    image = row.locator(f"img[src^='{chart_url}']")
    image.scroll_into_view_if_needed()
    expect(image).to_be_visible()
    expect(image).to_have_js_property("complete", True)
    assert image.evaluate("img => img.naturalWidth") >= 700
    page.steps.shot("chart")


def test_run_checks_for_a_chosen_symbol_and_see_its_result(ui, page):
    open_page(page, ui, "/locations/mltrading_assets/jobs/quality_checks_job/playground")
    picker = page.get_by_placeholder("Partition")
    picker.click()
    picker.fill("UIB")
    picker.press("Enter")
    expect(picker).to_have_value("UIB")
    page.steps.shot("symbol-chosen")
    page.get_by_role("button", name="Launch Run").click()

    run_id, status = ui.finished_run("quality_checks_job")
    assert status == "SUCCESS"
    results = ui.check_results(run_id)
    assert {symbol for _, symbol in results} == {"UIB"}
    assert len(results) == 8 and all(results.values()), results
    # The asset's Checks tab shows UIB's own result and numbers.
    open_page(page, ui, "/assets/market_data?view=checks")
    expect(page.get_by_text("UIB", exact=True)).to_be_visible()
    latest = page.inner_text("body").split("Latest execution")[1].split("Plots")[0]
    assert re.search(r"Passed.*Partition\s+UIB", latest, re.S), latest
    assert "off_grid_bars" in latest and "symbols_checked" not in latest, latest
    page.steps.shot("check-result")


def test_an_invalid_partition_costs_one_failed_run_and_the_checks_tab_agrees(ui, page):
    open_page(page, ui, "/assets/market_data")
    launch_one_partition(page, "nflx", "invalid-partition-chosen", add=True)

    ui.wait_until(
        "nflx's run ended",
        lambda: [s for _, s, _ in ui.runs_of_partition("nflx")] in (["FAILURE"], ["SUCCESS"]),
    )
    [(run_id, status, _)] = ui.runs_of_partition("nflx")
    assert status == "FAILURE"
    open_page(page, ui, f"/runs/{run_id}")
    expect(page.get_by_text("did you mean NFLX?").first).to_be_visible()
    page.steps.shot("failure-says-why")
    ui.wait_until(
        "the universe sensor removed the partition",
        lambda: (
            ui.sql("SELECT count(*) FROM dagster.dynamic_partitions WHERE partition = 'nflx'")
            == [(0,)]
        ),
        timeout=90,
    )
    time.sleep(15)  # the follow-up sensors (every 10 s) would have started features by now
    assert [r for r, _, _ in ui.runs_of_partition("nflx")] == [run_id]  # nothing followed it
    # No planned check execution outlived the partition: the latest one is a real symbol's.
    open_page(page, ui, "/assets/market_data?view=checks")
    expect(page.get_by_text("Latest execution").first).to_be_visible()
    latest = page.inner_text("body").split("Latest execution")[1].split("Plots")[0]
    assert "Execution failed" not in latest and "Passed" in latest, latest
    page.steps.shot("checks-tab-agrees")


def test_retrain_from_the_ui_and_see_why_the_model_was_or_was_not_promoted(ui, page):
    # As the README says: the job's page, the arrow beside "Materialize all", the launchpad.
    open_page(page, ui, "/locations/mltrading_assets/jobs/model_training_job")
    page.get_by_role("button", name="Materialize all").wait_for()
    page.locator("button:right-of(:text('Materialize all'))").first.click()
    page.get_by_role("menuitem", name="Open launchpad").click()
    editor = page.locator(".CodeMirror.cm-s-config-editor")
    expect(editor.get_by_text("promote")).to_be_visible()
    expect(editor.get_by_text("horizon_bars")).to_be_visible()
    page.steps.shot("launchpad-with-settings")
    # This run predicts two bars ahead instead of the configured one.
    editor.get_by_text("horizon_bars").click()
    page.keyboard.press("End")
    page.keyboard.press("Backspace")
    page.keyboard.type("2")
    expect(editor).to_contain_text("horizon_bars: 2")
    page.steps.shot("horizon-changed")
    page.get_by_role("dialog").get_by_role("button", name=re.compile(r"Materialize$")).click()

    _, status = ui.finished_run("model_training_job")
    assert ui.latest_metadata("training_dataset")["horizon_bars"] == 2
    # Synthetic bars are random walks: whether the first model beats the baselines is up to
    # chance, and either way the gate says why, on the evaluation's Checks tab.
    open_page(page, ui, "/assets/model_evaluation?view=checks")
    expect(page.get_by_text("promotion_gate").first).to_be_visible()
    latest = page.inner_text("body").split("Latest execution")[1]
    promoted = status == "SUCCESS"
    assert ("Passed" if promoted else "Failed") in latest, latest
    assert "reason" in latest and "baseline" in latest, latest
    page.steps.shot("gate-reason")
    open_page(page, ui, "/assets/model_evaluation")
    expect(page.get_by_text("comparison").first).to_be_visible()
    page.steps.shot("evaluation")


def test_materialize_all_on_the_global_lineage_asks_before_it_trains(ui, page):
    before = ui.runs()
    open_page(page, ui, "/asset-groups")
    page.get_by_role("button", name="Materialize all").first.click()
    launchpad = page.get_by_role("dialog").filter(has_text="Launchpad")
    expect(launchpad.get_by_text('Missing required config entry "champion_model"')).to_be_visible()
    expect(launchpad.get_by_role("button", name=re.compile(r"Materialize$"))).to_be_disabled()
    page.steps.shot("asks-for-promote")
    page.keyboard.press("Escape")
    time.sleep(3)
    assert ui.runs() == before


def test_a_symbol_added_from_the_cli_is_loaded_once(ui, page):
    added = ui.cli("symbols", "add", "UID")
    assert "no backfill needed" in added.stdout
    ui.wait_until(
        "UID's bars and features are in",
        lambda: "UID" in ui.materialized("feature_engineered_data"),
        timeout=300,
    )
    time.sleep(15)  # a second load would have been requested by now (sensor: 30 s)
    loads = ui.sql(
        "SELECT count(DISTINCT r.run_id) FROM dagster.runs r "
        "JOIN dagster.run_tags t ON t.run_id = r.run_id "
        "WHERE r.pipeline_name = 'market_data_job' "
        "AND t.key = 'dagster/asset_partition_range_start' AND t.value = 'UID'"
    )
    assert loads == [(1,)]
    open_page(page, ui, "/assets/feature_engineered_data?view=partitions&partition=UID")
    expect(page.get_by_text("rows_written").first).to_be_visible()
    page.steps.shot("loaded-once")


def test_the_ui_stops_on_sigterm_with_everything_it_started(ui):
    tree = ui.tree()
    assert any("dagster._daemon" in " ".join(p.cmdline()) for p in tree)  # it is all there
    started = time.monotonic()
    ui.process.send_signal(signal.SIGTERM)
    ui.process.wait(20)
    while still_running(tree) and time.monotonic() - started < 15:
        time.sleep(0.2)
    assert still_running(tree) == []
    assert time.monotonic() - started < 15
