"""Side-Step Studio in a real headless Chromium: a demo run started from the form, watched over server-sent events,
stopped, resumed and finished, its report and its export; a sweep from the form; a sidecar edited and a song folder
preprocessed. One studio server and one browser serve every test of the module."""

import json
import os
import re
import threading
from pathlib import Path

import pytest

from tests.helpers.audio import write_song

pytest.importorskip("fastapi", reason="pip install -e .[studio] (scripts/setup.sh)")
uvicorn = pytest.importorskip("uvicorn", reason="pip install -e .[studio] (scripts/setup.sh)")
expect = pytest.importorskip("playwright.sync_api", reason="pip install -e .[dev] (scripts/setup.sh)").expect

from sidestep.studio.__main__ import free_port  # noqa: E402
from sidestep.studio.app import create_app  # noqa: E402
from sidestep.studio.processes import Processes  # noqa: E402
from sidestep.studio.security import Folders  # noqa: E402
from tests.helpers.processes import ForkedPopen  # noqa: E402

INJECTED = "<img src=x onerror=window.pwned=1>"
WAIT_MS = 240_000  # a ceiling for a stuck page, never a pace: every wait is on what the page shows
pytestmark = pytest.mark.slow  # the studio starts real `python -m sidestep.train` processes, as a user's would


class ForkedProcesses(Processes):
    """The studio's commands forked from a process that has imported torch already (`tests/helpers/processes.py`):
    each skips that import, and is otherwise the command a user's studio starts."""

    def launch(self, argv, out, cwd):
        return ForkedPopen(argv, out.name, cwd, {**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture(scope="module")
def studio(tmp_path_factory, cache_dir):
    """(base url, token, served folder): the studio on a free port, serving a folder that also holds songs."""
    root = tmp_path_factory.mktemp("studio")
    songs = root / "songs"
    songs.mkdir()
    write_song(songs / "pad.wav", 44_100, 1)
    (songs / "pad.txt").write_text("caption: warm pad\nbpm: 90\nlyrics:\n[Instrumental]\n")
    write_song(songs / f"{INJECTED}.wav", 44_100, 1)  # a song named like markup
    (songs / f"{INJECTED}.json").write_text(json.dumps({"caption": "<script>window.pwned=2</script>"}))
    app = create_app(Folders([root]), "test-token", ForkedProcesses())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port("127.0.0.1"), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        thread.join(0.05)
    yield f"http://127.0.0.1:{server.config.port}", root, cache_dir
    server.should_exit = True
    thread.join()
    app.state.processes.close()


@pytest.fixture(scope="module")
def page(browser, studio):  # noqa: F811
    url, _, _ = studio
    context = browser.new_context()
    tab = context.new_page()
    tab.set_default_timeout(WAIT_MS)
    problems = []
    tab.on("pageerror", lambda e: problems.append(f"exception: {e}"))
    tab.goto(f"{url}/?token=test-token")  # the printed link: a cookie from then on
    yield tab, problems
    context.close()


def fill_new_run(tab, url, cache_dir, **fields):
    tab.goto(f"{url}/new")
    tab.wait_for_selector("select[name=experiment] option[value=demo]", state="attached")
    tab.select_option("select[name=experiment]", "demo")
    for key, value in fields.items():
        field = f"[data-key='{key.replace('__', '.')}']"
        tab.eval_on_selector(field, "input => { input.closest('details').open = true; }")
        tab.fill(field, value)
    tab.fill("#extra", f"data.synthetic.cache_dir={cache_dir}")


def wait_text(tab, selector, text):
    """Playwright's own waiting (the page's CSP forbids the eval that `wait_for_function` needs)."""
    expect(tab.locator(selector)).to_contain_text(text, timeout=WAIT_MS)


def step_of(tab) -> int:
    return int(re.fullmatch(r"step (\d+)/\d+", tab.text_content("#step")).group(1))


def test_a_demo_run_from_the_form_is_watched_stopped_resumed_finished_reported_and_exported(page, studio):
    tab, problems = page
    url, root, cache_dir = studio
    fill_new_run(tab, url, cache_dir, trainer__max_steps="300", trainer__log_every="1",
                 sample__every_n_epochs="null")
    tab.click("#check")
    wait_text(tab, "#summary", "300 optimizer steps")
    command = tab.text_content("#command")
    assert command.startswith("python -m sidestep.train experiment=demo trainer.max_steps=300")
    assert "hydra.run.dir=" in command
    tab.click("#start")
    tab.wait_for_url("**/run?ref=*")
    expect(tab.locator("#step")).to_have_text(re.compile(r"step [1-9]\d*/300"), timeout=WAIT_MS)  # over SSE
    first = step_of(tab)
    expect(tab.locator("#step")).not_to_have_text(f"step {first}/300", timeout=WAIT_MS)
    assert step_of(tab) > first
    tab.click("#stop")  # SIGINT, as Ctrl-C: the step ends, a checkpoint is written
    wait_text(tab, "#state", "stopped")
    stopped_at = step_of(tab)
    assert 0 < stopped_at < 300
    tab.wait_for_selector("#resume:not([disabled])")
    tab.click("#resume")
    wait_text(tab, "#state", "finished")
    wait_text(tab, "#step", "step 300/300")
    run = Path(tab.text_content("#folder"))
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert "resume_from=latest" in (run / "studio-console.log").read_text()

    tab.click("#report")
    tab.wait_for_url("**/report.html")
    assert "finished" in tab.text_content("h1")
    tab.go_back()
    tab.wait_for_selector("select[name=format]")
    tab.select_option("select[name=format]", "comfyui")
    tab.select_option("#export select[name=dtype]", "fp16")
    tab.click("#export button")
    wait_text(tab, "#exports", "comfyui")
    assert problems == []


def test_a_sweep_from_the_form_runs_every_combination(page, studio):
    tab, problems = page
    url, root, cache_dir = studio
    fill_new_run(tab, url, cache_dir, trainer__max_steps="2", adapter__rank="2,4", sample__every_n_epochs="null")
    tab.check("#sweep")
    tab.click("#check")
    wait_text(tab, "#command", "python -m sidestep.train -m experiment=demo")
    tab.click("#start")
    tab.wait_for_url("**/?sweep=*")
    expect(tab.locator("#runs tbody tr", has_text="finished")).to_have_count(2, timeout=WAIT_MS)
    ranks = tab.eval_on_selector_all("#runs tbody tr td:nth-child(5)", "cells => cells.map(c => c.textContent)")
    assert sorted(ranks) == ["2", "4"]
    assert problems == []


def test_a_sidecar_edited_in_the_table_is_saved_and_the_folder_preprocesses(page, studio):
    tab, problems = page
    url, root, _ = studio
    tab.goto(f"{url}/data?folder=songs")
    tab.wait_for_selector("tr[data-song='pad.wav']")
    names = tab.eval_on_selector_all("#songs tbody tr", "rows => rows.map(r => r.dataset.song)")
    assert INJECTED + ".wav" in names  # shown as text: no <img> was made of it
    assert tab.eval_on_selector_all("#songs img", "imgs => imgs.length") == 0
    caption = tab.input_value(f"tr[data-song='{INJECTED}.wav'] textarea[name=caption]")
    assert caption == "<script>window.pwned=2</script>"
    row = "tr[data-song='pad.wav']"
    tab.fill(f"{row} textarea[name=caption]", "warm pad, studio edit")
    tab.fill(f"{row} input[name=bpm]", "120")
    tab.click(f"{row} button")
    wait_text(tab, f"{row} .saved", "saved")
    sidecar = (root / "songs" / "pad.txt").read_text()
    assert "caption: warm pad, studio edit" in sidecar and "bpm: 120" in sidecar and "[Instrumental]" in sidecar
    tab.select_option("#model", "tiny")
    tab.click("#preprocess button")
    wait_text(tab, "#task-state", "done")
    written = sorted(p.name for p in (root / "songs" / "tensors").glob("*.safetensors"))
    assert len(written) == 2 and "pad.safetensors" in written
    assert tab.evaluate("window.pwned") is None and problems == []


def test_markup_in_a_run_name_failure_reason_and_prompt_is_shown_as_text(page, studio):
    tab, problems = page
    url, root, _ = studio
    run = root / "failed" / INJECTED
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("trainer: {max_steps: 3}\n")
    (run / "status.json").write_text(json.dumps({"state": "failed", "error": "<script>window.pwned=3</script>"}))
    tab.goto(f"{url}/?sweep=failed")
    wait_text(tab, "#runs tbody", "<script>window.pwned=3</script>")
    assert INJECTED in tab.text_content("#runs tbody")
    tab.click(f"#runs a:text-is('{INJECTED}')")
    wait_text(tab, "#reason", "<script>window.pwned=3</script>")
    tab.fill("#sample input[name=prompt]", "<img src=x onerror=window.pwned=4>")
    tab.click("#sample button")
    wait_text(tab, "#log", "<img src=x onerror=window.pwned=4>")
    assert tab.eval_on_selector_all("img", "imgs => imgs.length") == 0
    assert tab.evaluate("window.pwned") is None and problems == []
