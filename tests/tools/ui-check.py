#!/usr/bin/env python3
"""thunder — drives thunder-api's status page (/ui/) in headless Chromium.

Usage: ui-check.py API_URL TOKEN_FILE CLUSTER_NAME VMS SCREENSHOT [TIMEOUT_S]

As an operator would: opens API_URL/ui/, gives a wrong token and expects
the page's "token was refused" message, gives the right one, picks the
cluster CLUSTER_NAME in the table, and follows its relay tree until the
graph shows every node of GET /v1/clusters/{id}/tree (each with an edge
from its parent, the origin drawn too) and VMS VMs, all running.  Saves a
screenshot of the page at SCREENSHOT.  Prints what it saw; exit 0 on
success, 1 with the reason, 77 when Chromium or its driver is missing.
"""
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request


def fail(msg):
    print(f"ui-check: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) < 6:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    api, token_file, cname, want_vms, shot = sys.argv[1:6]
    want_vms = int(want_vms)
    timeout = float(sys.argv[6]) if len(sys.argv) > 6 else 300
    token = open(token_file).read().strip()
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By
    except ImportError:
        print("ui-check: python3-selenium missing", file=sys.stderr)
        sys.exit(77)
    if not chromium or not driver_path:
        print("ui-check: chromium or chromedriver missing", file=sys.stderr)
        sys.exit(77)

    profile = tempfile.mkdtemp(prefix="ui-check-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
              "--no-first-run", "--disable-background-networking",
              "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", "--window-size=1400,1000",
              f"--user-data-dir={profile}"):
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver_path), options=opts)
    try:
        run(drv, By, api, token, cname, want_vms, shot, timeout)
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(what, fn, timeout, step=0.2):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = fn()
            if last:
                return last
        except Exception as e:  # the page is redrawing: try again
            last = e
        time.sleep(step)
    fail(f"timed out waiting for {what} (last: {last!r})")


def api_get(api, token, path):
    req = urllib.request.Request(api + path,
                                 headers={"Authorization": "Bearer " + token})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.load(r)


def run(drv, By, api, token, cname, want_vms, shot, timeout):
    drv.get(api + "/ui/?refresh=1000")
    login = wait_for("the token form", lambda: drv.find_element(By.ID, "token"), 20)

    # A wrong token: a clear message, the form again.
    login.send_keys("wrong-token-0123456789abcdef")
    drv.find_element(By.CSS_SELECTOR, "#login-form button").click()
    msg = wait_for("the refused-token message",
                   lambda: (lambda m: m.is_displayed() and "token was refused" in m.text
                            and m.text)(drv.find_element(By.ID, "message")), 20)
    print(f"ui-check: wrong token: {msg!r}")

    drv.find_element(By.ID, "token").send_keys(token)
    drv.find_element(By.CSS_SELECTOR, "#login-form button").click()
    row = wait_for(f"cluster {cname} in the table",
                   lambda: drv.find_element(By.CSS_SELECTOR,
                                            f'#clusters tr[data-name="{cname}"]'), 30)
    cid = row.get_attribute("data-id")
    row.click()
    print(f"ui-check: cluster {cname} ({cid}) chosen")

    def tree_complete():
        tree = api_get(api, token, f"/v1/clusters/{cid}/tree")
        names = {n["node"] for n in tree["nodes"]}
        drawn = {g.get_attribute("data-node")
                 for g in drv.find_elements(By.CSS_SELECTOR, "#tree g.node")}
        if not names or drawn != names | {"origin"}:
            return None
        edges = {e.get_attribute("data-to")
                 for e in drv.find_elements(By.CSS_SELECTOR, "#tree path.edge")}
        if not names <= edges:
            return None
        return tree

    tree = wait_for("every tree node and edge drawn", tree_complete, 60)
    print(f"ui-check: tree drawn: {len(tree['nodes'])} nodes + origin, "
          f"depth {tree['depth']}")

    seen_states = set()

    def all_running():
        vms = drv.find_elements(By.CSS_SELECTOR, "#tree circle.vm")
        states = [v.get_attribute("data-state") for v in vms]
        seen_states.update(states)
        return len(states) == want_vms and all(s == "running" for s in states)

    wait_for(f"{want_vms} VMs running in the graph", all_running, timeout, 0.5)
    print(f"ui-check: VM states seen on the page: {sorted(seen_states)}")
    labels = [t.text for t in drv.find_elements(By.CSS_SELECTOR, "#tree text.edge-label")]
    print(f"ui-check: edge labels: {labels}")
    summary = drv.find_element(By.ID, "detail-summary").text
    if f"{want_vms} of {want_vms} VMs running" not in summary:
        fail(f"summary line: {summary!r}")
    os.makedirs(os.path.dirname(os.path.abspath(shot)), exist_ok=True)
    drv.save_screenshot(shot)
    print(f"ui-check: ok; screenshot {shot}")


if __name__ == "__main__":
    main()
