"""Makes docs/serve.png, the README's picture of ``medseg serve``: the default (shipped) model in headless
Chromium on the demo's real CT slice (pydicom's ``CT_small.dcm``), one named object from a box on the
spinal canal and one from a single click on the vertebral body above it.

    python docs/screenshot.py [--out docs/serve.png]

Needs Debian's ``chromium`` and ``chromium-driver`` and the test extra (selenium); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def wait_for(condition, timeout: float = 60.0, what: str = "the page"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"error: timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("serve.png"))
    args = parser.parse_args()
    chromium, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver_path):
        raise SystemExit("error: needs chromium and chromium-driver (apt-get install chromium chromium-driver)")
    from pydicom.data import get_testdata_file
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    root = Path(tempfile.mkdtemp())
    shutil.copy(get_testdata_file("CT_small.dcm"), root / "CT_small.dcm")
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "medseg.cli", "serve", "--port", str(port), "--root", str(root)])
    base = f"http://127.0.0.1:{port}"
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,720", "--disable-gpu"):
        options.add_argument(flag)
    browser = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        def healthy():
            try:
                return urllib.request.urlopen(base + "/api/health", timeout=2).status == 200
            except OSError:
                return False
        wait_for(healthy, timeout=120, what="medseg serve to start")
        browser.get(base + "/")
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#files option")) == 2, what="the --root listing")
        Select(browser.find_element(By.ID, "files")).select_by_value("CT_small.dcm")
        status = browser.find_element(By.ID, "status")
        wait_for(lambda: "128x128" in status.text, what="the CT slice")
        canvas = browser.find_element(By.ID, "canvas")
        scale = canvas.size["width"] / 128  # CSS pixels per image pixel; offsets from the canvas's centre

        def at(x: float, y: float):
            return ActionChains(browser).move_to_element_with_offset(canvas, int((x - 64) * scale), int((y - 64) * scale))

        name = browser.find_element(By.ID, "object-name")
        at(49, 40).click_and_hold().move_by_offset(int(22 * scale), int(21 * scale)).release().perform()
        wait_for(lambda: "object 1:" in status.text, what="the box's mask")
        name.send_keys("spinal canal\n")
        wait_for(lambda: "spinal canal" in status.text, what="the name")
        browser.find_element(By.ID, "new-object").click()
        browser.find_element(By.CSS_SELECTOR, "input[name=tool][value=point]").click()
        at(55, 25).click().perform()
        wait_for(lambda: "object 2:" in status.text, what="the click's mask")
        name.send_keys("vertebral body\n")
        wait_for(lambda: "vertebral body" in status.text, what="the name")
        time.sleep(0.5)
        browser.save_screenshot(str(args.out))
        print(f"wrote {args.out}")
    finally:
        browser.quit()
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
