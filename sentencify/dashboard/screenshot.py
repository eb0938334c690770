"""Pictures of the UIs with headless chromium: the dashboard once every chart has drawn (the
test and `make demo` check it), and Airflow's runs (for the docs, `make screenshots`).

Uses Debian's chromium through Playwright (no browser download). Both log in like a person
does: Superset's Public role stays empty.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from sentencify.dashboard import DASHBOARD_PATH
from sentencify.errors import ServiceError

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
CHART = "[data-test='chart-grid-component']"
BODY = "[data-test='slice-container']"
# What a drawn chart holds: ECharts canvas/svg, the big-number text, or a table.
DRAWN = "canvas, svg, .header-line, table"
BUSY = ".loading, [data-test='loading-indicator']"
EMPTY_TEXT = "No results were returned"


class ScreenshotError(ServiceError, RuntimeError):
    """The dashboard could not be drawn or shot (Superset or the browser failed)."""


@dataclass
class Shot:
    path: Path
    charts: int
    drawn: int
    empty: list[str]  # titles of charts that drew "no results"
    errors: list[str]  # titles and messages of charts that failed


def screenshot(url: str, username: str, password: str, out: Path, *, width: int = 1600, timeout_s: float = 120) -> Shot:
    """The dashboard alone (standalone mode: no Superset menus), once its charts have drawn."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise ScreenshotError(f"{CHROMIUM} is missing: run `make install` (apt-get install chromium)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": 1000})
            page.goto(f"{url}/login/", timeout=timeout_s * 1000)
            page.fill("#username", username)
            page.fill("#password", password)
            page.click("[data-test='login-button']")
            page.wait_for_url(lambda u: "/login" not in u, timeout=30_000)
            page.goto(f"{url}{DASHBOARD_PATH}?standalone=1", timeout=timeout_s * 1000)
            page.wait_for_selector(CHART, timeout=timeout_s * 1000)
            state = _wait_drawn(page, timeout_s)
            page.screenshot(path=str(out), full_page=True)
        finally:
            browser.close()
    return Shot(out, state["charts"], state["drawn"], state["empty"], state["errors"])


def _state(page) -> dict:
    """Charts on the page, how many have drawn, which are empty or show an error."""
    return page.evaluate(
        """([chart, body, drawn, busy, emptyText]) => {
            const charts = Array.from(document.querySelectorAll(chart));
            const title = c => (c.querySelector("[data-test='editable-title']") || c).innerText.trim().slice(0, 80);
            const out = {charts: charts.length, drawn: 0, empty: [], errors: []};
            for (const c of charts) {
                const b = c.querySelector(body);
                if (!b || b.querySelector(busy)) continue;
                const text = b.innerText || "";
                if (text.includes(emptyText)) { out.empty.push(title(c)); out.drawn++; }
                else if (b.querySelector(drawn)) out.drawn++;
                else if (text.trim()) out.errors.push(title(c) + ": " + text.trim().slice(0, 200));
            }
            return out;
        }""",
        [CHART, BODY, DRAWN, BUSY, EMPTY_TEXT],
    )


def _settled(state: dict) -> bool:
    return state["drawn"] + len(state["errors"]) >= state["charts"] > 0


def _wait_drawn(page, timeout_s: float) -> dict:
    """Until every chart has drawn and is still drawn after the animations: the native filters
    load after the first drawing and make the dashboard draw again, briefly blank."""
    deadline = time.monotonic() + timeout_s
    while True:
        state = _state(page)
        if _settled(state):
            page.wait_for_timeout(1500)  # chart animations, and a redraw the filters may start
            again = _state(page)
            if _settled(again) or time.monotonic() > deadline:
                return again
        elif time.monotonic() > deadline:
            return state
        page.wait_for_timeout(500)


def airflow_screenshot(
    url: str,
    username: str,
    password: str,
    out: Path,
    *,
    path: str = "/dags/sentencify_etl/runs",
    width: int = 1600,
    height: int = 1250,
    settle_ms: int = 4000,
) -> Path:
    """The Airflow UI (simple auth manager login) at `path`, e.g. a DAG's grid, for the docs."""
    from playwright.sync_api import sync_playwright

    out.parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(f"{url}/auth/login")
            page.fill("input[name='username']", username)
            page.fill("input[name='password']", password)
            page.click("button[type='submit']")
            page.wait_for_url(lambda u: "/auth/login" not in u, timeout=30_000)
            page.goto(url + path)
            page.wait_for_timeout(settle_ms)  # the grid fills in over several API calls
            page.screenshot(path=str(out))  # the runs table scrolls inside the page: the viewport is the picture
        finally:
            browser.close()
    return out


def main() -> int:
    """`make screenshots`: refresh docs/img/ from the running local stack (after `make demo`)."""
    from sentencify.dashboard.deploy import superset_password
    from sentencify.settings import PROJECT_ROOT, Settings
    from sentencify.stack import airflow

    settings = Settings.from_env()
    out = PROJECT_ROOT / "docs" / "img"
    shot = screenshot(settings.superset_url, settings.superset_username, superset_password(settings), out / "dashboard.png")
    print(f"{shot.path}: {shot.drawn}/{shot.charts} charts drawn")
    grid = airflow_screenshot(
        settings.airflow_url, airflow.ADMIN_USER, airflow.admin_password(settings), out / "airflow_grid.png"
    )
    print(f"{grid}: sentencify_etl's runs")
    return 0 if shot.drawn == shot.charts and not shot.errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
