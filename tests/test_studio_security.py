"""The studio's locks, in-process (Starlette's TestClient): the token, paths only inside the served folders,
markup never served as a page, and overrides refused or passed as one literal argument, never to a shell."""

import json
import subprocess
import sys
from urllib.parse import unquote

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

pytest.importorskip("fastapi", reason="pip install -e .[studio] (scripts/setup.sh)")
from fastapi.testclient import TestClient  # noqa: E402

from sidestep.run_status import read_status  # noqa: E402
from sidestep.studio import processes  # noqa: E402
from sidestep.studio.app import create_app  # noqa: E402
from sidestep.studio.security import COOKIE, Folders  # noqa: E402

TOKEN = "secret-token"


@pytest.fixture
def served(tmp_path):
    """(client with the cookie, client without, the served folder, a folder beside it that is not served)."""
    root, outside = tmp_path / "served", tmp_path / "private"
    (root / "run" / ".hydra").mkdir(parents=True)
    (root / "run" / ".hydra" / "config.yaml").write_text(  # saved as composed: a start refused before resolving
        "run: {name: '${sidestep_run_name:${now:%H}}'}\ntrainer: {max_steps: 3}\n")
    (root / "run" / "status.json").write_text(json.dumps({"state": "failed", "error": "<script>x()</script>"}))
    (root / "run" / "page.html").write_text("<script>alert(1)</script>")
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    (root / "run" / "link").symlink_to(outside)
    (root / "songs").symlink_to(outside, target_is_directory=True)
    app = create_app(Folders([root]), TOKEN)
    anonymous = TestClient(app, follow_redirects=False)
    signed_in = TestClient(app, follow_redirects=False)
    assert signed_in.get(f"/?token={TOKEN}").status_code == 303
    return signed_in, anonymous, root, outside


@pytest.mark.parametrize("path", ["/", "/run?ref=0/run", "/static/studio.js", "/api/runs", "/api/form",
                                  "/files/0/run/status.json", "/api/run/events?ref=0/run"])
def test_every_request_without_the_token_is_refused(served, path):
    _, anonymous, _, _ = served
    assert anonymous.get(path).status_code == 401
    assert anonymous.get(path, headers={"cookie": f"{COOKIE}=wrong"}).status_code == 401
    assert anonymous.get(path, headers={"x-studio-token": TOKEN[:-1]}).status_code == 401


def test_the_link_sets_an_http_only_same_site_cookie_and_drops_the_token_from_the_address(served):
    _, anonymous, _, _ = served
    response = anonymous.get(f"/run?ref=0/run&token={TOKEN}")
    assert response.status_code == 303 and unquote(response.headers["location"]) == "/run?ref=0/run"
    cookie = response.headers["set-cookie"]
    assert f"{COOKIE}={TOKEN}" in cookie and "HttpOnly" in cookie and "SameSite=strict" in cookie
    assert anonymous.get("/api/runs", headers={"cookie": f"{COOKIE}={TOKEN}"}).status_code == 200


@pytest.mark.parametrize("ref", ["0/../private/secret.txt", "0/run/../../private/secret.txt", "0//etc/passwd",
                                 "/etc/passwd", "0/run/link/secret.txt", "0/songs/secret.txt", "1/anything",
                                 "0/run/..%2F..%2Fprivate/secret.txt"])
def test_paths_outside_the_served_folders_are_refused(served, ref):
    client, _, _, _ = served
    response = client.get(f"/files/{ref}")
    assert response.status_code in (403, 404) and "not yours" not in response.text
    assert client.get("/api/songs", params={"ref": unquote(ref).rsplit("/", 1)[0]}).status_code == 403


def test_a_file_inside_is_served_sandboxed_so_html_in_a_run_folder_cannot_script(served):
    client, _, _, _ = served
    response = client.get("/files/0/run/page.html")
    assert response.status_code == 200
    policy = response.headers["content-security-policy"]
    assert policy.startswith("sandbox") and "script-src 'none'" in policy
    assert "allow-scripts" not in policy and response.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in client.get("/").headers["content-security-policy"]  # no inline script runs


def test_a_failure_reason_travels_as_json_text_never_as_markup(served):
    client, _, _, _ = served
    rows = client.get("/api/runs").json()["runs"]
    assert rows[0]["error"] == "<script>x()</script>" and rows[0]["name"] == "run"
    assert client.get("/api/runs").headers["content-type"] == "application/json"


@pytest.mark.parametrize("override", ["run.name=$(touch pwned)", "adapter.rank=4;touch pwned", "adapter.rank=4 && ls",
                                      "hydra.callbacks.x._target_=os.system", "+evil._target_=os.system",
                                      "--config-dir=/tmp", "adapter.rank=`id`", "optimizer._target_=os.system",
                                      "run.name=${oc.env:HOME}", "data._target_=builtins.print",
                                      "data.dataset_dir=${oc.env:HOME}"])
def test_overrides_with_shell_or_code_in_them_are_refused_with_one_line(served, override):
    client, _, _, _ = served
    response = client.post("/api/check", json={"overrides": ["experiment=demo", override], "folder": "0"})
    assert response.status_code == 400
    assert "\n" not in response.json()["error"]


def test_a_value_with_shell_characters_goes_to_the_process_as_one_literal_argument(served, monkeypatch):
    client, _, root, _ = served
    started = []

    class Recorded:
        def __init__(self, argv, **kwargs):
            started.append((argv, kwargs))

        def poll(self):
            return 0

    monkeypatch.setattr(processes.subprocess, "Popen", Recorded)
    literal = "data.synthetic.cache_dir='/tmp/a b;touch pwned $(id)'"
    response = client.post("/api/start", json={"overrides": ["experiment=demo", literal], "folder": "0"})
    assert response.status_code == 200, response.text
    (argv, kwargs), = started
    assert argv[1:4] == ["-m", "sidestep.train", "experiment=demo"] and literal in argv
    assert not kwargs.get("shell") and isinstance(argv, list)
    assert kwargs["stdin"] is subprocess.DEVNULL
    assert kwargs["start_new_session"] and kwargs["env"]["PYTHONUNBUFFERED"] == "1"  # Ctrl-C once; lines as they come


@pytest.mark.parametrize("text", ["warm lofi piano, 90 bpm", "it's [x] ${oc.env:HOME}", "null", "123", "a\\",
                                  "/tmp/a b;touch pwned", "/runs/demo-1", "$(id) `id` | & > <"])
def test_a_prompt_or_path_becomes_exactly_one_hydra_value(text):
    override = OverridesParser.create().parse_overrides([f"prompt={processes.quoted(text)}"])[0]
    assert OmegaConf.create({"prompt": override.value()}).prompt == text


TERMINAL_RUN = """
import json, os, signal, socket, sys, time
from filelock import FileLock
run = sys.argv[1]
lock = FileLock(os.path.join(run, ".sidestep.lock"))
lock.acquire()
status = {"state": "running", "pid": os.getpid(), "host": socket.gethostname()}
open(os.path.join(run, "status.json"), "w").write(json.dumps(status))
try:
    signal.pause()
except KeyboardInterrupt:
    open(os.path.join(run, "stopped"), "w").write("by SIGINT")
"""


def test_stop_reaches_a_run_started_in_a_terminal_and_nothing_else(served):
    """Stop is Ctrl-C for a run the studio did not start too: its status names the process, and the run's lock
    must be held (a pid left in a finished run's status may belong to another process by now)."""
    client, _, root, _ = served
    run = root / "run"
    refused = client.post("/api/run/stop", json={"ref": "0/run"})  # failed: no process to stop
    assert refused.status_code == 400 and "no run is training there" in refused.json()["error"]
    child = subprocess.Popen([sys.executable, "-c", TERMINAL_RUN, str(run)])
    try:
        while (read_status(run) or {}).get("pid") != child.pid:  # waits on state: the child said it runs
            assert child.poll() is None, "the stand-in run died"
        assert client.post("/api/run/stop", json={"ref": "0/run"}).status_code == 200
        assert child.wait() == 0 and (run / "stopped").read_text() == "by SIGINT"
    finally:
        child.kill()
    status = json.loads((run / "status.json").read_text())  # still "running", but no process holds the lock
    assert status["state"] == "running" and client.post("/api/run/stop", json={"ref": "0/run"}).status_code == 400


def test_a_run_page_lists_the_adapter_kept_at_each_sampled_step(tmp_path):
    from sidestep.studio.runs import snapshot

    run = tmp_path / "run"
    for name in ("adapter/demo.safetensors", "adapters/step-0000002/demo-step2.safetensors"):
        (run / name).parent.mkdir(parents=True, exist_ok=True)
        (run / name).write_bytes(b"x")
    assert snapshot(run)["exports"] == ["adapter/demo.safetensors", "adapters/step-0000002/demo-step2.safetensors"]
