"""Make the README's two screenshots of the listening report: the demo run's page (with a `compare=true` round
from its final adapter, so the base and other strengths show) and a two-job sweep's page, in headless Chromium.

    python scripts/report_screenshots.py          # writes docs/report-run.png and docs/report-sweep.png (a few minutes)
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import sync_playwright

DOCS = Path(__file__).resolve().parents[1] / "docs"


def sidestep(app: str, *args: str) -> None:
    subprocess.run([sys.executable, "-m", f"sidestep.{app}", *args, "ui.yes=true", "ui.plain=true"], check=True,
                   stdout=subprocess.DEVNULL)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="sidestep-shots-"))
    run, sweep = work / "demo", work / "sweep"
    sidestep("train", "experiment=demo", f"hydra.run.dir={run}")
    sidestep("sample", str(run), "compare=true", "compare_strengths=[0.5,1.5]", "count=2", "duration=4")
    sidestep("train", "-m", "experiment=demo", "trainer.max_steps=60", "adapter.rank=4,8", "data.val_fraction=0.25",
             "trainer.log_heavy_every=10", "sample.every_n_epochs=null", f"hydra.sweep.dir={sweep}")
    subprocess.run([sys.executable, "-m", "sidestep.report", str(run)], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "sidestep.report", str(sweep)], check=True, stdout=subprocess.DEVNULL)
    DOCS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        for page_file, name in ((run / "report.html", "report-run.png"), (sweep / "report.html", "report-sweep.png")):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(page_file.as_uri())
            page.wait_for_load_state("load")
            page.screenshot(path=str(DOCS / name), full_page=True)
            print(f"wrote {DOCS / name}")
        browser.close()
    shutil.rmtree(work)


if __name__ == "__main__":
    main()
