"""The playground page in headless Chromium (selenium): loads it, generates
from a prompt, reads the streamed text of each model, opens a token's
candidates with the keyboard, checks the page fits a phone's width, and saves
screenshots.

    python3 playground.py URL SHOT_DIR

Prints one JSON object with what it saw.
"""
import json
import pathlib
import shutil
import sys

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

url, shots = sys.argv[1], pathlib.Path(sys.argv[2])
shots.mkdir(parents=True, exist_ok=True)
options = webdriver.ChromeOptions()
for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1200,1000"]:
    options.add_argument(flag)
# Debian's browser and driver, named, so that selenium looks for nothing online.
options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=shutil.which("chromedriver")))
seen = {}
try:
    driver.get(url)
    wait = WebDriverWait(driver, 60)
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "ready")
    seen["title"] = driver.find_element(By.TAG_NAME, "h1").text
    seen["prompt_buttons"] = len(driver.find_elements(By.CSS_SELECTOR, ".prompt-choice"))
    prompt = driver.find_element(By.ID, "prompt")
    prompt.clear()
    prompt.send_keys("Pikachu est")
    for field, value in [("top_k", "3"), ("max_tokens", "24"), ("seed", "7")]:
        box = driver.find_element(By.ID, field)
        box.clear()
        box.send_keys(value)
    driver.find_element(By.ID, "go").click()
    wait.until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state") == "done")
    seen["status"] = driver.find_element(By.ID, "status").text
    seen["load"] = driver.find_element(By.ID, "load").text
    columns = driver.find_elements(By.CSS_SELECTOR, ".output")
    seen["outputs"] = [{"id": c.get_attribute("id"), "text": c.find_element(By.CSS_SELECTOR, ".text").text,
                        "tokens": len(c.find_elements(By.CSS_SELECTOR, ".tok"))} for c in columns]
    # The keyboard: focus the third token of the first column and press Enter.
    token = columns[0].find_elements(By.CSS_SELECTOR, ".tok")[2]
    driver.execute_script("arguments[0].focus()", token)
    token.send_keys(Keys.ENTER)
    rows = columns[0].find_elements(By.CSS_SELECTOR, ".panel tbody tr")
    seen["candidates"] = [{"probs": json.loads(r.get_attribute("data-probs")), "cut": r.get_attribute("data-cut"),
                           "cut_cells": len(r.find_elements(By.CSS_SELECTOR, "td.cut")),
                           "chosen": "chosen" in (r.get_attribute("class") or "")} for r in rows]
    seen["caption"] = columns[0].find_element(By.CSS_SELECTOR, ".panel caption").text
    driver.save_screenshot(str(shots / "playground.png"))
    driver.set_window_size(390, 844)
    seen["phone_overflow"] = driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
    driver.save_screenshot(str(shots / "playground-phone.png"))
finally:
    driver.quit()
print(json.dumps(seen))
