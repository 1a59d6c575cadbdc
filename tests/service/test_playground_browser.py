"""The playground in a real browser: headless Debian Chromium (driven by Selenium through Debian's
chromedriver) against a real `paella serve` of the shipped paella-mini on the CPU, with an API key. It
generates, paints a mask and inpaints, outpaints, interpolates and composes, and keeps a screenshot in
results/browser/."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ARTEFACTS = REPO / "results" / "browser"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)
WAIT_S = 60
API_KEY = "playground-test-key"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`paella serve` (paella-mini, CPU) on a free port, as a user starts it; its URL once ready."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {
        **os.environ,
        "PAELLA_PORT": str(port),
        "PAELLA_DEVICE": "cpu",
        "PAELLA_MAX_BATCH_SIZE": "2",
        "PAELLA_LOG_LEVEL": "warning",
        "PAELLA_API_KEYS": API_KEY,
    }
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "service", "serve"], cwd=REPO, env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"paella serve did not become ready:\n{log.read_text()}")
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    for tool in (CHROMIUM, CHROMEDRIVER):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is missing: scripts/test.sh installs it (scripts/ensure-tools.sh)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    options.add_argument("--window-size=1280,1000")
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()


def open_playground(driver: WebDriver, url: str) -> None:
    """Load the page, give it the API key, and wait until it has read the model's card (<body data-ready>)."""
    driver.get(url)
    field = driver.find_element(By.ID, "api-key")
    field.clear()
    field.send_keys(API_KEY + "\t")
    WebDriverWait(driver, WAIT_S).until(
        lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-ready")
    )
    assert not driver.find_element(By.ID, "error").is_displayed()


def pictures(driver: WebDriver) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, "#gallery figure img")


def next_group(driver: WebDriver, click: str, before: int, count: int) -> list[WebElement]:
    """Click `click`, wait for `count` new pictures to be loaded, and return them (newest group first)."""
    driver.find_element(By.ID, click).click()
    done = "[...document.querySelectorAll('#gallery img')].filter(i => i.complete && i.naturalWidth).length"
    WebDriverWait(driver, WAIT_S).until(
        lambda d: (
            d.execute_script(f"return {done}") >= before + count
            or d.find_element(By.ID, "error").is_displayed()
        )
    )
    assert not driver.find_element(By.ID, "error").is_displayed(), driver.find_element(By.ID, "error").text
    return pictures(driver)[:count]


def natural_size(driver: WebDriver, image: WebElement) -> tuple[int, int]:
    return tuple(
        driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", image)
    )


def set_value(driver: WebDriver, element_id: str, value: object) -> None:
    field = driver.find_element(By.ID, element_id)
    field.clear()
    field.send_keys(str(value))


def test_generate_inpaint_outpaint_interpolate_compose(served: str, browser: WebDriver) -> None:
    driver = browser
    driver.get(served)
    driver.execute_script("sessionStorage.clear()")  # a first visit: no key yet
    driver.refresh()
    error = driver.find_element(By.ID, "error")
    WebDriverWait(driver, WAIT_S).until(lambda d: error.is_displayed())
    assert error.text == "401: a valid API key is required: Authorization: Bearer <key>"
    open_playground(driver, served)
    assert "paella-mini" in driver.find_element(By.ID, "model").text
    set_value(driver, "steps", 6)
    set_value(driver, "seed", 11)

    made = next_group(driver, "generate", 0, 2)
    assert [natural_size(driver, image) for image in made] == [(128, 128)] * 2
    header = driver.find_element(By.CSS_SELECTOR, "#gallery .group .latency").text
    assert header.endswith(" ms") and int(header.split()[0]) > 0
    seeds = [b.text for b in driver.find_elements(By.CSS_SELECTOR, "#gallery .seed")]
    assert seeds == ["seed 11", "seed 12"]

    # click a seed to reuse it; open the second picture in the editor and paint its right half
    driver.find_elements(By.CSS_SELECTOR, "#gallery .seed")[1].click()
    assert driver.find_element(By.ID, "seed").get_attribute("value") == "12"
    driver.find_elements(By.CSS_SELECTOR, "#gallery .edit")[1].click()
    mask = driver.find_element(By.ID, "mask")
    WebDriverWait(driver, WAIT_S).until(lambda d: mask.is_displayed() and mask.size["width"] > 0)
    width, height = mask.size["width"], mask.size["height"]
    stroke = ActionChains(driver).move_to_element_with_offset(mask, width // 4, -height // 3).click_and_hold()
    for _ in range(4):
        stroke = stroke.move_by_offset(0, height // 6)
    stroke.release().perform()
    painted = driver.execute_script(
        "const m = document.getElementById('mask');"
        "const pixels = m.getContext('2d').getImageData(0, 0, m.width, m.height).data;"
        "return pixels.filter((v, i) => i % 4 == 3 && v).length"
    )
    assert 0 < painted < 128 * 128 / 2
    n = len(pictures(driver))
    set_value(driver, "n", 1)
    [inpainted] = next_group(driver, "inpaint", n, 1)
    assert natural_size(driver, inpainted) == (128, 128)

    set_value(driver, "pad-right", 64)
    set_value(driver, "pad-up", 32)
    assert driver.find_element(By.ID, "outpaint-size").text.endswith("192×160")
    [outpainted] = next_group(driver, "outpaint", n + 1, 1)
    assert natural_size(driver, outpainted) == (192, 160)

    driver.find_element(By.CSS_SELECTOR, "[data-tab=interpolate]").click()
    set_value(driver, "frames", 4)
    frames = next_group(driver, "interpolate", n + 2, 4)
    assert len(frames) == 4 and driver.find_elements(By.CSS_SELECTOR, "#gallery .strip")

    driver.find_element(By.CSS_SELECTOR, "[data-tab=compose]").click()
    canvas = driver.find_element(By.ID, "regions")
    half_width, half_height = canvas.size["width"] // 2, canvas.size["height"] // 2
    for prompt, left in (
        ("a large yellow square in the top left on a white background", -half_width + 2),
        ("a large green triangle in the bottom right on a white background", 2),
    ):
        box = (
            ActionChains(driver).move_to_element_with_offset(canvas, left, -half_height + 2).click_and_hold()
        )
        box.move_by_offset(half_width - 4, 2 * half_height - 4).release().perform()
        driver.find_elements(By.CSS_SELECTOR, "#region-list input")[-1].send_keys(prompt)
    boxes = [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#region-list .muted")]
    assert len(boxes) == 2 and boxes[0].startswith("0.0") and boxes[1].startswith("0.5"), boxes
    [composed] = next_group(driver, "compose", n + 6, 1)
    assert natural_size(driver, composed) == (128, 128)
    driver.find_element(By.CSS_SELECTOR, "[data-tab=picture]").click()

    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    driver.execute_script("window.scrollTo(0, 0)")
    assert driver.save_screenshot(str(ARTEFACTS / "playground.png"))


def test_api_errors_are_shown_plainly(served: str, browser: WebDriver) -> None:
    driver = browser
    open_playground(driver, served)
    set_value(driver, "n", 9)
    driver.find_element(By.ID, "generate").click()
    error = driver.find_element(By.ID, "error")
    WebDriverWait(driver, WAIT_S).until(lambda d: error.is_displayed())
    assert error.text == "400: n: Input should be less than or equal to 8"
    assert "failed" in driver.find_element(By.CSS_SELECTOR, "#gallery .group .latency").text


def test_fits_a_phone_width(served: str, browser: WebDriver) -> None:
    driver = browser
    driver.set_window_size(390, 844)
    try:
        open_playground(driver, served)
        for tab in ("generate", "picture", "interpolate", "compose"):
            driver.find_element(By.CSS_SELECTOR, f"[data-tab={tab}]").click()
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth"
            )
            assert overflow <= 0, tab
    finally:
        driver.set_window_size(1280, 1000)
