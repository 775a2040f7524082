"""The README's picture of ``gentool serve`` (docs/serve.png): two small runs compared on the Runs tab.

Trains a small gan twice (different seeds, a few epochs) and a tiny gpt in a temporary runs folder,
serves them in this process and photographs the page with Debian's headless chromium (selenium).

    python benchmarks/serve_screenshot.py [--out docs/serve.png]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "serve.png"))
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update(GENTOOL_RUNS=f"{tmp}/runs", GENTOOL_CACHE=f"{tmp}/cache", HF_HUB_OFFLINE="1")
        import gentool
        from gentool.serve import ServeConfig, start_background

        for seed in (0, 1):
            gentool.train("cgan", epochs=6, seed=seed, name=f"digits-seed{seed}", quiet=True, val_samples=0)
        gentool.train("gpt", epochs=1, name="tales", quiet=True, n_layer=2, n_embd=64, n_head=4, iters_per_epoch=60)
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By

        opts = webdriver.ChromeOptions()
        opts.binary_location = "/usr/bin/chromium"
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     f"--user-data-dir={tmp}/profile", "--window-size=1400,900", "--hide-scrollbars"):
            opts.add_argument(flag)
        with start_background(ServeConfig(runs=Path(tmp) / "runs", device="cpu")) as server:
            driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
            try:
                driver.get(server.url + "/")
                for _ in range(100):
                    if driver.find_elements(By.CSS_SELECTOR, '#run-list li[data-id="cgan/digits-seed1"] input'):
                        break
                    time.sleep(0.1)
                driver.execute_script("opened.splice(0, opened.length, 'cgan/digits-seed0', 'cgan/digits-seed1');"
                                      "loadRuns(); renderPanels();")  # what ticking both boxes does
                time.sleep(2)  # the grids and curves are drawn
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(args.out)
            finally:
                driver.quit()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
