"""Make the README's screenshots of Side-Step Studio: its runs list, a finished run, the new-run form after its
check, and a song folder's labels, in headless Chromium, from a folder of demo runs made first.

    python scripts/studio_screenshots.py    # writes docs/studio-{runs,run,new,data}.png (a few minutes)
"""

import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import soundfile
import uvicorn
from playwright.sync_api import expect, sync_playwright

from sidestep.studio.__main__ import free_port
from sidestep.studio.app import create_app
from sidestep.studio.security import Folders

DOCS = Path(__file__).resolve().parents[1] / "docs"
TOKEN = "screenshots"


def sidestep(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "sidestep.train", *args, "ui.yes=true", "ui.plain=true"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # the failed run fails on purpose


def make_folder(work: Path) -> None:
    """A finished demo run, a two-job sweep, a run refused before training, and three labelled songs."""
    sidestep("experiment=demo", "trainer.max_steps=80", "data.val_fraction=0.25", "trainer.log_heavy_every=10",
             "sample.every_n_epochs=null", f"hydra.run.dir={work / 'demo'}")
    sidestep("-m", "experiment=demo", "trainer.max_steps=40", "adapter.rank=4,8", "optimizer.lr=1e-3",
             "sample.every_n_epochs=null", f"hydra.sweep.dir={work / 'sweep'}")
    sidestep("experiment=demo", "adapter.rank=0", f"hydra.run.dir={work / 'refused'}")
    songs = work / "songs"
    songs.mkdir()
    t = np.arange(48_000 * 2) / 48_000
    for name, hz, label in (("warm_pad", 220, {"caption": "warm analog pad, slow", "bpm": 72, "key": "A minor"}),
                            ("night_drive", 330, {"caption": "synthwave, night drive", "bpm": 110}),
                            ("hum_01", 440, None)):
        soundfile.write(songs / f"{name}.wav", 0.3 * np.sin(2 * np.pi * hz * t), 48_000)
        if label:
            (songs / f"{name}.json").write_text(json.dumps(label))


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="sidestep-studio-shots-"))
    make_folder(work)
    app = create_app(Folders([work]), TOKEN)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port("127.0.0.1"), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    url = f"http://127.0.0.1:{server.config.port}"
    DOCS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{url}/?token={TOKEN}")
        expect(page.locator("#runs tbody tr")).to_have_count(4, timeout=120_000)
        shot(page, "studio-runs.png")
        page.goto(f"{url}/run?ref=0/demo")
        expect(page.locator("#state")).to_have_text("finished", timeout=120_000)
        expect(page.locator("#loss polyline")).to_have_count(2, timeout=120_000)
        shot(page, "studio-run.png")
        page.goto(f"{url}/new?experiment=demo")
        expect(page.locator("select[name=experiment]")).to_have_value("demo", timeout=120_000)
        for key in ("trainer.max_steps", "adapter.rank"):
            page.eval_on_selector(f"[data-key='{key}']", "input => { input.closest('details').open = true; }")
        page.fill("[data-key='trainer.max_steps']", "200")
        page.fill("[data-key='adapter.rank']", "8")
        page.click("#check")
        expect(page.locator("#summary")).to_contain_text("optimizer steps", timeout=300_000)
        shot(page, "studio-new.png")
        page.goto(f"{url}/data?folder=songs")
        expect(page.locator("#songs tbody tr")).to_have_count(3, timeout=120_000)
        shot(page, "studio-data.png")
        browser.close()
    server.should_exit = True
    thread.join()
    shutil.rmtree(work)


def shot(page, name: str) -> None:
    page.screenshot(path=str(DOCS / name), full_page=True)
    print(f"wrote {DOCS / name}")


if __name__ == "__main__":
    main()
