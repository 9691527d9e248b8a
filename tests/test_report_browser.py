"""The listening report in a real browser: headless Chromium (Debian's, which scripts/setup.sh installs, or
Playwright's) opens the page of a trained run and of a sweep; every player, picture and link must resolve, the
audio must decode, and the page must log no error."""

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from omegaconf import OmegaConf

from sidestep.config import as_container
from sidestep.report.__main__ import main as report
from sidestep.train import train_adapter
from tests.conftest import compose_cfg


def browser_path():
    return shutil.which("chromium") or shutil.which("chromium-browser")  # None: Playwright's own build


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e .[dev] (scripts/setup.sh)")
    with sync_api.sync_playwright() as p:
        try:
            chromium = p.chromium.launch(executable_path=browser_path(), args=["--no-sandbox"])
        except sync_api.Error as err:
            pytest.fail(f"no headless Chromium ({str(err).splitlines()[0]}): run scripts/setup.sh")
        yield chromium
        chromium.close()


def record_hydra(run: Path, cfg, overrides) -> None:
    """What Hydra leaves in a run dir of `python -m sidestep.train <overrides>`."""
    (run / ".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(as_container(cfg), run / ".hydra" / "config.yaml")
    OmegaConf.save(list(overrides), run / ".hydra" / "overrides.yaml")
    OmegaConf.save({"hydra": {"job": {"name": "train"}}}, run / ".hydra" / "hydra.yaml")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, cache_dir):
    """Job 0 trains with samples, job 1 without, job 2 failed before training (its status says why)."""
    root = tmp_path_factory.mktemp("sweep")
    for job, rank, extra in ((0, 4, ["sample.every_n_steps=3", "sample.duration=1"]), (1, 8, [])):
        overrides = ["experiment=demo", "trainer.max_steps=6", f"adapter.rank={rank}", *extra]
        cfg = compose_cfg(cache_dir, *overrides[1:])
        record_hydra(root / str(job), cfg, overrides)
        train_adapter(cfg, root / str(job))
    failed = ["experiment=demo", "trainer.max_steps=6", "adapter.rank=0"]
    record_hydra(root / "2", compose_cfg(cache_dir, *failed[1:], check=False), failed)  # as composed: never resolved
    (root / "2" / "status.json").write_text('{"state": "failed", "error": "adapter.rank: must be at least 1 (got 0)"}')
    report([str(root)])
    return root


def open_page(browser, page_file: Path):
    """(page, problems): console errors, failed requests and uncaught exceptions while it loaded."""
    page = browser.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"exception: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed to load {r.url}: {r.failure}")
            if r.failure != "net::ERR_ABORTED" else None)  # aborted: a player that read just what it needed
    page.goto(page_file.as_uri())
    page.wait_for_load_state("load")
    return page, problems


def local_file(url: str) -> Path:
    parsed = urlparse(url)
    assert parsed.scheme == "file", url
    return Path(unquote(parsed.path))


def check_references(page, folder: Path) -> None:
    """Every src and href is relative, lies inside the run or sweep folder and exists; every picture decoded."""
    refs = page.eval_on_selector_all("[src], [href]", "els => els.map(e => [e.getAttribute('src') ?? "
                                     "e.getAttribute('href'), e.src || e.href])")
    assert refs
    for written, resolved in refs:
        assert not written.startswith(("/", "file:")), written
        target = local_file(resolved)
        assert target.is_file() and folder in target.parents, written
    broken = page.eval_on_selector_all("img", "imgs => imgs.filter(i => !(i.complete && i.naturalWidth > 0))"
                                              ".map(i => i.src)")
    assert broken == []


def test_a_run_page_plays_every_sample_in_chromium(browser, sweep):
    run = sweep / "0"
    page, problems = open_page(browser, run / "report.html")
    players = page.eval_on_selector_all("audio", "els => els.map(e => e.src)")
    wavs = sorted((run / "samples").rglob("*.wav"))
    assert len(wavs) == 4  # 2 prompts at step 3 and at the last step, 6
    assert sorted(local_file(src) for src in players) == wavs
    # every player knows its length before it is played (issue 27: 0:00/0:00 with preload="none")
    page.wait_for_function("() => [...document.querySelectorAll('audio')].every(a => a.readyState >= 1)",
                           timeout=120_000)
    durations = page.eval_on_selector_all("audio", "els => els.map(e => e.duration)")
    assert durations == pytest.approx([1.0] * 4, abs=0.05)  # sample.duration=1: the browser decoded the WAVs
    check_references(page, run)
    captions = page.eval_on_selector_all("figcaption", "els => els.map(e => e.textContent)")
    assert captions[:2] == ["step 3 (no checkpoint kept)", "step 6"]  # checkpoints: only the last step's
    assert "finished" in page.text_content("h1")
    assert page.locator("code.cmd", has_text="sidestep.export adapter").count() == 1
    assert problems == []


def test_a_sweep_page_links_every_job_and_marks_the_failed_one(browser, sweep):
    page, problems = open_page(browser, sweep / "report.html")
    check_references(page, sweep)
    rows = page.eval_on_selector_all("tbody tr", "rows => rows.map(r => r.innerText)")
    assert len(rows) == 3
    assert "failed" in rows[-1] and "adapter.rank: must be at least 1 (got 0)" in rows[-1]
    assert all("experiment=demo" not in row for row in rows)  # only what varies
    assert sorted(page.eval_on_selector_all("tbody a", "els => els.map(e => e.getAttribute('href'))")) == [
        "0/report.html", "1/report.html", "2/report.html"]
    players = sorted(local_file(src) for src in page.eval_on_selector_all("audio", "els => els.map(e => e.src)"))
    assert players == sorted((sweep / "0" / "samples" / "step-0000006").glob("*.wav"))  # job 0's newest round
    failed_job, problems_there = open_page(browser, sweep / "2" / "report.html")
    assert "adapter.rank: must be at least 1 (got 0)" in failed_job.text_content("h1")
    assert problems == [] and problems_there == []


def test_a_long_run_page_fits_the_window(browser, tmp_path):
    """Issue 27: ten sample points made a row wider than the window, and long commands pushed the page sideways."""
    from sidestep.report.run_page import write_run_page
    from sidestep.report.runs import read_run
    from tests.test_report import make_run, make_sample

    typed = ["experiment=demo", "data.dataset_dir=" + "/a-folder-with-a-long-name" * 12]  # no space to wrap at
    run = make_run(tmp_path / "run", typed, status={"state": "finished"})
    for step in range(100, 1100, 100):
        make_sample(run / "samples" / f"step-{step:07d}", "0_warm_lofi_piano", {"step": step, "strength": 1.0})
        (run / "checkpoints" / f"step-{step:07d}").mkdir(parents=True)
        (run / "checkpoints" / f"step-{step:07d}" / "trainer_state.json").write_text("{}")
    write_run_page(read_run(run, tmp_path))
    page, problems = open_page(browser, run / "report.html")
    page.set_viewport_size({"width": 900, "height": 700})
    hidden = page.evaluate("""() => [document.documentElement, ...document.querySelectorAll('.row, table')]
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.className || e.tagName)""")
    assert hidden == []
    assert problems == []
