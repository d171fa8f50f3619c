"""The web dashboard in a real headless browser (Debian's chromium and chromedriver, through selenium)
against a live `batchai serve`: sign in, a running job's log lines arriving without a reload, a queued
job's position and why it waits, a sweep's plot, and what a Reader may not do.

Each page is photographed at 1280x800 and at a phone's width (390x844) into
artifacts/dashboard-screenshots/ (gitignored), and must not scroll sideways at either.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT, SUB, TOKEN
from tests.integration.test_sweeps import sweep_body
from tests.support.naming import unique_name
from tests.support.waiting import until

V = {"api-version": "2018-05-01"}
SHOTS = ROOT / "artifacts" / "dashboard-screenshots"
SIZES = {"desktop": (1280, 800, False), "phone": (390, 844, True)}
PROVIDER = "/providers/Microsoft.BatchAI"
pytestmark = pytest.mark.timeout(240)


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


@pytest.fixture(scope="module")
def browser():
    found = _chromium()
    if found is None:
        pytest.skip("chromium and chromium-driver are not installed (scripts/setup.sh installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run", "--window-size=1280,800"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=found[1]))
    driver.set_page_load_timeout(30)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def site(server):
    """A workspace with a 1-node cluster (logs, sweeps) and a 2-node one (the queue), and an experiment."""
    http = server.http()
    ws = unique_name("dash", "dashboard")
    base = f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.BatchAI/workspaces/{ws}"
    assert http.put(base, params=V, json={"location": "local"}).status_code == 200
    for cluster, nodes in (("c", 1), ("q", 2)):
        body = {"vmSize": "D1", "userAccountSettings": {"adminUserName": "u"}, "scaleSettings": {"manual": {"targetNodeCount": nodes}}}
        assert http.put(f"{base}/clusters/{cluster}", params=V, json={"properties": body}).status_code == 200
    assert http.put(f"{base}/experiments/e", params=V).status_code == 200
    for cluster, nodes in (("c", 1), ("q", 2)):
        until(
            lambda c=cluster, n=nodes: (
                http.get(f"{base}/clusters/{c}", params=V).json()["properties"]["nodeStateCounts"]["idleNodeCount"] == n
            ),
            60,
            f"cluster {cluster}'s nodes to be idle",
        )
    return {"http": http, "ws": ws, "base": base, "url": server.url}


def job(http, base: str, name: str, command: str, *, cluster: str = "c", nodes: int = 1, **extra) -> str:
    body = {
        "cluster": {"id": f"{base}/clusters/{cluster}"},
        "nodeCount": nodes,
        "stdOutErrPathPrefix": "$AZ_BATCHAI_JOB_MOUNT_ROOT",
        "customToolkitSettings": {"commandLine": command},
        **extra,
    }
    response = http.put(f"{base}/experiments/e/jobs/{name}", params=V, json={"properties": body})
    assert response.status_code in (200, 201, 202), response.text
    return f"{base}/experiments/e/jobs/{name}"


def sign_in(driver, url: str, token: str = TOKEN) -> None:
    """Through the sign-in page, as a person with a token does."""
    from selenium.webdriver.common.by import By

    driver.get(f"{url}/dashboard/#/signin")
    driver.execute_script("sessionStorage.clear()")
    driver.get(f"{url}/dashboard/#/signin")
    field = wait_for(driver, "#token")
    field.send_keys(token)
    driver.find_element(By.CSS_SELECTOR, "#signin button[type=submit]").click()
    wait_text(driver, "h1", "Workspaces")


def _stale():
    from selenium.common.exceptions import StaleElementReferenceException

    return (StaleElementReferenceException,)  # the page re-drew what was found


def wait_for(driver, css: str, timeout: float = 30):
    from selenium.webdriver.common.by import By

    return until(lambda: (found := driver.find_elements(By.CSS_SELECTOR, css)) and found[0], timeout, f"the page to show {css}")


def wait_text(driver, css: str, text: str, timeout: float = 30) -> str:
    from selenium.webdriver.common.by import By

    def has() -> str | None:
        for element in driver.find_elements(By.CSS_SELECTOR, css):
            content = element.text
            if text in content:
                return content
        return None

    return until(has, timeout, f"{text!r} in {css}", ignoring=_stale())


def photograph(driver, page: str) -> None:
    """Screenshots at both sizes; the page must fit the width at both (readable without sideways scrolling)."""
    for size, (width, height, mobile) in SIZES.items():
        driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}
        )
        overflow = until(lambda: driver.execute_script("return [document.documentElement.scrollWidth, window.innerWidth]"), 5, "the layout")
        assert overflow[0] <= overflow[1] + 1, f"{page} scrolls sideways at {size} width: {overflow}"
        driver.save_screenshot(str(SHOTS / f"{page}-{size}.png"))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def cli(url: str, token: str, *args: str) -> str:
    env = {**os.environ, "BATCHAI_URL": url, "BATCHAI_TOKEN": token, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "batchai.cli.main", *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_sign_in_with_the_one_time_link_of_batchai_dashboard_and_with_a_token(browser, site):
    out = cli(site["url"], TOKEN, "dashboard", "--no-open")
    link = re.search(r"Sign in \(once, within \d+ s\): (\S+)", out).group(1)
    assert link.startswith(f"{site['url']}/dashboard/") and "#signin=" in link and TOKEN not in link
    browser.get(f"{site['url']}/dashboard/")
    browser.execute_script("sessionStorage.clear()")
    browser.get(link)
    wait_text(browser, "main", site["ws"])
    assert "signin" not in browser.current_url  # the code left the address bar
    assert browser.execute_script("return sessionStorage.getItem('batchai.token')") == TOKEN
    photograph(browser, "workspaces")

    browser.execute_script("sessionStorage.clear()")
    browser.get(link)  # a second use of the same link is refused
    wait_text(browser, "#signin-note", "used already")
    photograph(browser, "sign-in")

    sign_in(browser, site["url"])
    wait_text(browser, "main", site["ws"])


def test_a_running_jobs_log_lines_arrive_without_a_reload(browser, site):
    sign_in(browser, site["url"])
    name = unique_name("live", "logs")
    job(site["http"], site["base"], name, "for i in $(seq 1 200); do echo tick-$i; sleep 0.3; done")
    browser.get(f"{site['url']}/dashboard/#/j/rg/{site['ws']}/e/{name}")
    first = wait_text(browser, "#log", "tick-")
    browser.execute_script("window.stillThisPage = true")  # a reload would lose it
    seen = int(re.findall(r"tick-(\d+)", first)[-1])
    later = f"tick-{seen + 5}\n"
    wait_text(browser, "#log", later.strip(), timeout=60)
    assert browser.execute_script("return window.stillThisPage") is True
    wait_text(browser, "main", "running")
    assert browser.find_elements("css selector", "#events li")  # the timeline: queued, started
    wait_text(browser, "#files", "stdout.txt")  # its output files (stdouterr first), with download links
    assert (
        browser.find_element("css selector", "#files a[download='stdout.txt']").get_attribute("href").startswith(site["url"] + "/_files/")
    )
    photograph(browser, "job")
    site["http"].post(f"{site['base']}/experiments/e/jobs/{name}/terminate", params=V)


def test_a_queued_jobs_position_and_why_it_waits(browser, site):
    http, base = site["http"], site["base"]
    blocker = unique_name("blocker", "queue")
    job(http, base, blocker, "sleep 120", cluster="q", constraints={"maxWallClockTime": "PT1H"})
    until(
        lambda: http.get(f"{base}/experiments/e/jobs/{blocker}", params=V).json()["properties"]["executionState"] == "running",
        60,
        "the blocker",
    )
    gang = unique_name("gang", "queue")
    job(http, base, gang, "true", cluster="q", nodes=2)
    behind = unique_name("behind", "queue")
    job(http, base, behind, "sleep 1", cluster="q")  # 7 days of maxWallClockTime: it would delay the gang's start
    try:
        sign_in(browser, site["url"])
        browser.get(f"{site['url']}/dashboard/#/c/rg/{site['ws']}/q")
        text = wait_text(browser, "#queue", behind)
        rows = [r for r in text.splitlines() if r.strip()]
        assert any(gang in r for r in rows) and "Reservation" in text and "BehindReservation" in text, text
        gang_row = next(r for r in browser.find_elements("css selector", "#queue tbody tr") if gang in r.text)
        behind_row = next(r for r in browser.find_elements("css selector", "#queue tbody tr") if behind in r.text)
        assert gang_row.find_element("css selector", "td").text == "1" and "Reservation" in gang_row.text
        assert "starts within" in gang_row.text
        assert behind_row.find_element("css selector", "td").text == "2" and "BehindReservation" in behind_row.text
        wait_text(browser, "main", "running")  # the node table: the blocker's node
        photograph(browser, "cluster")
        browser.get(f"{site['url']}/dashboard/#/w/rg/{site['ws']}")
        wait_text(browser, "main", "File servers")
        photograph(browser, "workspace")
        browser.get(f"{site['url']}/dashboard/#/e/rg/{site['ws']}/e")
        wait_text(browser, "main", gang)
        photograph(browser, "experiment")
    finally:
        for name in (blocker, gang, behind):
            http.post(f"{base}/experiments/e/jobs/{name}/terminate", params=V)


def test_a_sweeps_plot_shows_each_trials_objective_and_the_best_so_far(browser, site):
    http, base = site["http"], site["base"]
    name = unique_name("sweep", "plot")
    body = sweep_body(base, limits={"max_total_trials": 3, "max_concurrent_trials": 1})
    assert http.put(f"{base}/experiments/e/sweeps/{name}", params=V, json=body).status_code == 200
    sign_in(browser, site["url"])
    browser.get(f"{site['url']}/dashboard/#/s/rg/{site['ws']}/e/{name}")
    until(
        lambda: len(browser.find_elements("css selector", "#sweep-plot circle.trial")) >= 3 + 1, 180, "3 trials on the plot"
    )  # +1: legend
    best = browser.find_element("css selector", "#sweep-plot path.best").get_attribute("d")
    assert best.startswith("M") and best.count("V") == 2, best  # a step for each later trial
    until(lambda: len(browser.find_elements("css selector", "main table tbody tr")) == 3, 30, "a row per trial")
    photograph(browser, "sweep")


def test_the_audit_page_shows_the_log_or_says_it_is_not_available(browser, site):
    sign_in(browser, site["url"])
    browser.get(f"{site['url']}/dashboard/#/audit")
    text = wait_text(browser, "main", "Audit log")
    until(lambda: "Loading" not in browser.find_element("css selector", "main").text, 30, "the audit page to load")
    text = browser.find_element("css selector", "main").text
    served = site["http"].get(f"{PROVIDER}/auditLog", params=V).status_code
    assert ("not available" in text) == (served == 404), text
    photograph(browser, "audit")


def test_an_owner_sees_write_buttons_a_reader_sees_none_and_the_api_refuses_a_reader(browser, site):
    http, base = site["http"], site["base"]
    pages = [f"#/w/rg/{site['ws']}", f"#/c/rg/{site['ws']}/c", "#/"]
    sign_in(browser, site["url"])
    for page in pages:
        browser.get(f"{site['url']}/dashboard/{page}")
        wait_for(browser, ".write")  # the Owner (today's only token) may change things: the buttons are there
    if http.get(f"{PROVIDER}/whoami", params=V).status_code == 404:
        pytest.skip("waits on the roles route (GET /providers/Microsoft.BatchAI/whoami, issue 14): no Reader token can be made yet")
    made = http.post(f"{PROVIDER}/tokens", params=V, json={"role": "Reader", "name": "dashboard-reader"})
    assert made.status_code == 201, made.text
    reader = made.json()["token"]
    sign_in(browser, site["url"], reader)
    for page in pages:
        browser.get(f"{site['url']}/dashboard/{page}")
        wait_text(browser, "main", site["ws"] if page == "#/" else "Nodes" if "/c/" in page else "Clusters")
        assert browser.find_elements("css selector", ".write") == [], page
        assert not [b.text for b in browser.find_elements("css selector", "button") if b.text in ("Create", "Delete", "Terminate", "Pause")]
    photograph(browser, "reader-workspace")
    as_reader = {"Authorization": f"Bearer {reader}"}
    refused = [
        http.put(f"{base}/experiments/x", params=V, headers=as_reader),
        http.delete(f"{base}/clusters/c", params=V, headers=as_reader),
        http.put(f"{base.rsplit('/', 1)[0]}/{unique_name('ws', 'reader')}", params=V, json={"location": "local"}, headers=as_reader),
    ]
    assert [r.status_code for r in refused] == [403, 403, 403], [r.text for r in refused]


def test_pages_and_sign_in_need_no_token_but_every_api_call_does(site):
    """The pages are static; what they show comes from the API, which wants the bearer token."""
    import httpx

    page = httpx.get(f"{site['url']}/dashboard/")
    assert page.status_code == 200 and "default-src 'none'" in page.headers["content-security-policy"]
    assert "http://" not in page.text.replace(site["url"], "") and "https://" not in page.text  # nothing from elsewhere
    for outside in ("%2e%2e%2ftoken", "..%2Fstore.db", "__init__.py"):  # only the bundled files, by name
        assert httpx.get(f"{site['url']}/dashboard/{outside}").status_code == 404, outside
    assert httpx.get(f"{site['url']}{site['base']}/clusters/q/queue", params=V).status_code == 401
    assert httpx.post(f"{site['url']}/dashboard/signin", json={"code": "x" * 40}).status_code == 403
    assert httpx.post(f"{site['url']}/dashboard/signin", content=b"{" + b" " * 100_000).status_code == 413
    code = site["http"].post(f"{PROVIDER}/dashboardSignIn", params=V).json()["code"]
    assert httpx.post(f"{site['url']}/dashboard/signin", json={"code": code}).json() == {"token": TOKEN}
    assert httpx.post(f"{site['url']}/dashboard/signin", json={"code": code}).status_code == 403


def test_the_queue_route_says_priority_next_in_line_and_paused(site):
    http, base = site["http"], site["base"]
    blocker, normal, high = (unique_name(p, "priority") for p in ("blocker", "normal", "high"))
    job(http, base, blocker, "sleep 120")
    until(
        lambda: http.get(f"{base}/experiments/e/jobs/{blocker}", params=V).json()["properties"]["executionState"] == "running",
        60,
        "the blocker",
    )
    job(http, base, normal, "true")
    job(http, base, high, "true", schedulingPriority="high")
    try:
        queue = http.get(f"{base}/clusters/c/queue", params=V).json()
        rows = [(r["position"], r["name"], r["reason"]["code"]) for r in queue["value"]]
        assert rows == [(1, high, "NoIdleNode"), (2, normal, "Priority")], queue
        assert (
            "Next in line" in queue["value"][0]["reason"]["message"] and "1 of a higher priority" in queue["value"][1]["reason"]["message"]
        )
        assert http.post(f"{base}/clusters/c/pause", params=V).status_code == 200
        assert {r["reason"]["code"] for r in http.get(f"{base}/clusters/c/queue", params=V).json()["value"]} == {"ClusterPaused"}
    finally:
        http.post(f"{base}/clusters/c/resume", params=V)
        for name in (blocker, normal, high):
            http.post(f"{base}/experiments/e/jobs/{name}/terminate", params=V)
