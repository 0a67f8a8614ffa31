"""The page in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven by Selenium; nothing
downloaded at run time): open a real CT slice from ``--root``, draw a box, click, see the mask's
pixels change, undo, paint with the brush, export a NIfTI and check its geometry. Screenshots go to
``$MEDSEG_TEST_ARTIFACTS`` (default: the test's tmp folder). Skipped with a reason without a browser,
unless ``MEDSEG_REQUIRE_BROWSER=1`` (``.ci/run`` sets it after installing one)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from medseg.io import read_image, read_label, write_image
from test_serve_cli import free_port, get, start

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and DRIVER) and os.environ.get("MEDSEG_REQUIRE_BROWSER") == "1":
    pytest.fail("MEDSEG_REQUIRE_BROWSER=1 but chromium/chromedriver are not installed (apt-get install chromium "
                "chromium-driver)", pytrace=False)
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="needs chromium and chromium-driver (apt-get)")
webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")


def wait_for(condition, timeout: float = 20.0, what: str = "the page"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def browser(tmp_path):
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,800",
                 "--disable-gpu"):
        options.add_argument(flag)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


def test_box_click_undo_brush_export_in_the_page(browser, tmp_path):
    from pydicom.data import get_testdata_file
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    artifacts = Path(os.environ.get("MEDSEG_TEST_ARTIFACTS", tmp_path / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    root = tmp_path / "root"
    root.mkdir()
    ct = read_image(get_testdata_file("CT_small.dcm"))  # a real CT slice, 128x128, with its geometry
    write_image(ct, root / "ct.nii.gz")
    port = free_port()
    server, _ = start(["--port", str(port), "--root", str(root)])
    base = f"http://127.0.0.1:{port}"
    try:
        get(f"{base}/api/health")
        browser.get(base + "/")
        files = wait_for(lambda: [o for o in browser.find_elements(By.CSS_SELECTOR, "#files option") if o.get_attribute("value")],
                         what="the --root listing")
        Select(browser.find_element(By.ID, "files")).select_by_value("ct.nii.gz")
        status = browser.find_element(By.ID, "status")
        wait_for(lambda: "ct.nii.gz: 128x128" in status.text, what="the image to open")
        image_id = wait_for(lambda: browser.execute_script("return state.image && state.image.image_id"))
        canvas = browser.find_element(By.ID, "canvas")
        wait_for(lambda: browser.execute_script("return state.picture !== null"), what="the slice picture")
        pixels = "return Array.from(canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data)"
        before = np.array(browser.execute_script(pixels))
        browser.save_screenshot(str(artifacts / "serve_opened.png"))

        scale = canvas.size["width"] / 128  # CSS pixels per image pixel
        ActionChains(browser).move_to_element_with_offset(canvas, int(-30 * scale), int(-30 * scale)).click_and_hold() \
            .move_by_offset(int(50 * scale), int(50 * scale)).release().perform()
        wait_for(lambda: "object 1:" in status.text, what="the box mask")
        after_box = np.array(browser.execute_script(pixels))
        assert (after_box != before).any(), "the mask overlay changed the canvas"
        assert get(f"{base}/api/images/{image_id}/session")[1]["prompts"][0]["box"] is not None

        ActionChains(browser).move_to_element_with_offset(canvas, int(10 * scale), 0).click().perform()
        wait_for(lambda: len(get(f"{base}/api/images/{image_id}/session")[1]["prompts"]) == 2, what="the click")
        prompts = get(f"{base}/api/images/{image_id}/session")[1]["prompts"]
        assert prompts[1]["points"] and prompts[1]["labels"] == [1]
        browser.save_screenshot(str(artifacts / "serve_box_and_click.png"))

        browser.find_element(By.ID, "undo").click()
        wait_for(lambda: len(get(f"{base}/api/images/{image_id}/session")[1]["prompts"]) == 1, what="undo")

        browser.find_element(By.CSS_SELECTOR, "input[name=tool][value=brush]").click()
        ActionChains(browser).move_to_element_with_offset(canvas, int(30 * scale), int(30 * scale)).click_and_hold() \
            .move_by_offset(int(20 * scale), 0).release().perform()
        wait_for(lambda: "painted" in status.text, what="the brush stroke")
        stroke = get(f"{base}/api/images/{image_id}/session")[1]["prompts"][-1]
        assert len(stroke["strokes"]) >= 2 and stroke["erase"] is False

        browser.find_element(By.CSS_SELECTOR, "button[data-format=nifti]").click()
        saved = wait_for(lambda: [p for p in browser.downloads.glob("*.nii.gz")], what="the NIfTI download")[0]
        label = read_label(saved)
        source = read_image(root / "ct.nii.gz")
        assert label.array.shape == (1, 128, 128) and label.array.any()
        np.testing.assert_allclose(label.meta.affine, source.meta.affine, atol=1e-5)
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_planes_propagation_and_automatic_mode_in_the_page(browser, tmp_path):
    """The shipped universal model: a volume cut in the coronal plane, a box there, its propagation over
    the rows; then a picture segmented with no prompt (automatic mode), and a click that refines it."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    artifacts = Path(os.environ.get("MEDSEG_TEST_ARTIFACTS", tmp_path / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    root = tmp_path / "root"
    root.mkdir()
    zz, yy, xx = np.mgrid[:12, :64, :64]
    volume = np.where(((zz - 6) / 5) ** 2 + ((yy - 32) / 18) ** 2 + ((xx - 32) / 18) ** 2 < 1, 200.0, 30.0)
    write_image(volume.astype(np.float32), root / "ball.nii.gz")
    write_image(np.where((yy[0] - 30) ** 2 + (xx[0] - 34) ** 2 < 300, 220, 40).astype(np.uint8), root / "spot.png")
    port = free_port()
    server, _ = start(["--port", str(port), "--root", str(root), "--model", "universal"])
    base = f"http://127.0.0.1:{port}"
    try:
        get(f"{base}/api/health", attempts=300)
        browser.get(base + "/")
        status = browser.find_element(By.ID, "status")
        wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#files option")) == 3, what="the --root listing")
        Select(browser.find_element(By.ID, "files")).select_by_value("ball.nii.gz")
        wait_for(lambda: "64x64x12" in status.text, what="the volume to open")
        image_id = browser.execute_script("return state.image.image_id")
        Select(browser.find_element(By.ID, "plane")).select_by_value("coronal")
        wait_for(lambda: browser.execute_script("return canvas.height === 12 && state.slice === 31"), what="the coronal cut")
        canvas = browser.find_element(By.ID, "canvas")
        sx, sy = canvas.size["width"] / 64, canvas.size["height"] / 12  # CSS pixels per voxel
        ActionChains(browser).move_to_element_with_offset(canvas, int(-20 * sx), int(-4 * sy)).click_and_hold() \
            .move_by_offset(int(40 * sx), int(8 * sy)).release().perform()
        wait_for(lambda: "object 1:" in status.text, what="the coronal box mask")
        browser.find_element(By.ID, "first").clear()
        browser.find_element(By.ID, "first").send_keys("20")
        browser.find_element(By.ID, "last").clear()
        browser.find_element(By.ID, "last").send_keys("40")
        browser.find_element(By.ID, "propagate").click()
        wait_for(lambda: "voxels" in status.text, timeout=120, what="the propagation")
        browser.save_screenshot(str(artifacts / "serve_coronal_propagated.png"))
        prompts = get(f"{base}/api/images/{image_id}/session")[1]["prompts"]
        assert prompts[0]["plane"] == "coronal" and prompts[0]["slice"] == 31 and prompts[0]["box"]
        assert prompts[1] == {"slice": 31, "object": 1, "propagate": [20, 40], "plane": "coronal"}

        Select(browser.find_element(By.ID, "files")).select_by_value("spot.png")
        wait_for(lambda: "spot.png: 64x64" in status.text, what="the picture to open")
        image_id = browser.execute_script("return state.image.image_id")
        assert not browser.find_element(By.ID, "automatic-mode").get_attribute("hidden")
        browser.find_element(By.ID, "automatic").click()
        wait_for(lambda: " px" in status.text and "ms" in status.text, timeout=60, what="the automatic segmentation")
        browser.save_screenshot(str(artifacts / "serve_automatic.png"))
        session = get(f"{base}/api/images/{image_id}/session")[1]
        assert session["prompts"][0]["automatic"] and session["objects"]  # every class of the task, named
        ActionChains(browser).move_to_element_with_offset(canvas, 0, 0).click().perform()
        wait_for(lambda: len(get(f"{base}/api/images/{image_id}/session")[1]["prompts"]) == 2, what="the refining click")
        refined = get(f"{base}/api/images/{image_id}/session")[1]["prompts"][1]
        assert refined["points"] and refined["object"] == int(next(iter(session["objects"])))
    finally:
        server.terminate()
        server.wait(timeout=20)
