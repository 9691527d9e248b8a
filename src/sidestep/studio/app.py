"""The studio's routes: pages (static HTML and one vanilla JS file from this package), a JSON API over the
library, server-sent events for what changes on disk, and the files of the served folders."""

import asyncio
import json
from pathlib import Path
from typing import Optional

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles

from sidestep.errors import SidestepError
from sidestep.report_pages.run_page import PAGE, write_run_page
from sidestep.report_pages.runs import find_runs, is_training_run, read_run
from sidestep.report_pages.sweep_page import rank, write_sweep_page, write_tables
from sidestep.run_status import read_status
from sidestep.studio import forms, overrides, songs
from sidestep.studio.processes import (
    PLAIN,
    Processes,
    command,
    console_log,
    quoted,
    resume_args,
    shown,
    train_args,
)
from sidestep.studio.runs import RunRows, run_events, snapshot
from sidestep.studio.security import COOKIE, Folders, PathRefused, token_matches

STATIC = Path(__file__).parent / "static"
PAGES = {"/": "runs.html", "/run": "run.html", "/new": "new.html", "/data": "data.html"}
PAGE_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; media-src 'self'; "
               "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
FILE_POLICY = "sandbox allow-same-origin; default-src 'self'; script-src 'none'; style-src 'self' 'unsafe-inline'"
EVENTS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


def create_app(folders: Folders, token: str, processes: Optional[Processes] = None) -> FastAPI:
    app = FastAPI(title="Side-Step Studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.processes = processes or Processes()
    tasks: Processes = app.state.processes
    list_runs = RunRows(folders)

    @app.middleware("http")
    async def only_with_the_token(request: Request, call_next):
        given = request.query_params.get("token")
        if given is not None and token_matches(given, token):  # the printed link: a cookie from now on
            rest = request.url.remove_query_params("token")
            response = RedirectResponse(rest.path + (f"?{rest.query}" if rest.query else ""), status_code=303)
            response.set_cookie(COOKIE, token, httponly=True, samesite="strict")
            return response
        if not token_matches(request.cookies.get(COOKIE, "") or request.headers.get("x-studio-token", ""), token):
            return Response("open the link the studio printed (it carries the token)\n", status_code=401,
                            media_type="text/plain")
        response = await call_next(request)
        sandboxed = request.url.path.startswith("/files/")
        response.headers["Content-Security-Policy"] = FILE_POLICY if sandboxed else PAGE_POLICY
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.exception_handler(SidestepError)
    async def one_line(request: Request, err: SidestepError):
        return JSONResponse({"error": str(err)}, status_code=403 if isinstance(err, PathRefused) else 400)

    for route, page in PAGES.items():
        app.add_api_route(route, _page(page), methods=["GET"], include_in_schema=False)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/files/{ref:path}")
    async def served_file(ref: str):
        path = folders.path_of(ref)
        if not path.is_file():
            raise PathRefused(f"{ref}: no such file")
        return FileResponse(path)

    @app.get("/api/folders")
    async def served_folders():
        return {"folders": folders.listing()}

    @app.post("/api/folders")
    async def add_folder(body: dict):
        return {"ref": str(folders.add(Path(str(body.get("path", ""))))), "folders": folders.listing()}

    @app.get("/api/runs")
    async def runs():
        return {"runs": await asyncio.to_thread(list_runs)}

    @app.get("/api/runs/events")
    async def runs_events(request: Request):
        async def changes():
            seen = None
            while not await request.is_disconnected():
                rows = await asyncio.to_thread(list_runs)
                if rows != seen:
                    seen = rows
                    yield f"data: {json.dumps({'runs': rows})}\n\n"
                await asyncio.sleep(1.0)
        return StreamingResponse(changes(), media_type="text/event-stream", headers=EVENTS)

    @app.get("/api/run")
    async def run(ref: str):
        path = _run(folders, ref, tasks)
        return {"ref": ref, **await asyncio.to_thread(snapshot, path), **_task_state(tasks, ref)}

    @app.get("/api/run/events")
    async def run_stream(ref: str, request: Request):
        path = _run(folders, ref, tasks)
        events = run_events(path, request.is_disconnected, lambda: _task_state(tasks, ref))
        return StreamingResponse(events, media_type="text/event-stream", headers=EVENTS)

    @app.post("/api/run/stop")
    async def stop(body: dict):
        path = _run(folders, body.get("ref"), tasks)
        in_sweep = (path.parent / "multirun.yaml").is_file() and tasks.get(str(body["ref"])) is None
        tasks.stop(folders.ref(path.parent) if in_sweep else str(body["ref"]), path)
        return {"stopping": True}

    @app.post("/api/run/resume")
    async def resume(body: dict):
        path = _run(folders, body.get("ref"))
        if (read_status(path) or {}).get("state") == "running" and tasks.get(body["ref"]) is None:
            raise SidestepError(f"{path}: the run is still training (or died without saying so)")
        task = tasks.start(body["ref"], "train", resume_args(path), console_log(path), path)
        return {"command": shown(task.argv)}

    @app.post("/api/run/export")
    async def export(body: dict):
        path = _run(folders, body.get("ref"))
        source = _checkpoint(path, body.get("checkpoint"))
        args = [str(source), "--format", str(body.get("format") or "all")]
        args += ["--dtype", str(body["dtype"])] if body.get("dtype") else []
        task = tasks.start(body["ref"], "export", args, console_log(path), path)
        return {"command": shown(task.argv)}

    @app.post("/api/run/sample")
    async def sample(body: dict):
        path = _run(folders, body.get("ref"))
        source = _checkpoint(path, body.get("checkpoint"))
        args = [f"source={quoted(str(source))}", f"strength={_number(body.get('strength', 1.0), 'strength')}",
                f"compare={'true' if body.get('compare') else 'false'}", PLAIN]
        if body.get("prompt"):
            args.append(f"prompt={quoted(str(body['prompt']))}")
        args += [f"duration={_number(body['duration'], 'duration')}"] if body.get("duration") else []
        task = tasks.start(body["ref"], "sample", args, console_log(path), path)
        return {"command": shown(task.argv)}

    @app.get("/report")
    async def report(ref: str):
        path = folders.path_of(ref)
        await asyncio.to_thread(write_report, path)
        return RedirectResponse(f"/files/{folders.ref(path / PAGE)}", status_code=303)

    @app.get("/api/form")
    async def form():
        return {"groups": forms.groups(), "fields": forms.fields(), "folders": folders.listing()}

    @app.post("/api/check")
    async def check(body: dict):
        return await asyncio.to_thread(_plan_start, folders, body)

    @app.post("/api/start")
    async def start(body: dict):
        planned = await asyncio.to_thread(_plan_start, folders, body, False)
        folder = Path(planned["folder"])
        tasks.start(planned["ref"], "train", planned["args"], console_log(folder), root_of(folders, folder))
        return {"ref": planned["ref"], "sweep": planned["sweep"], "command": planned["command"]}

    @app.get("/api/songs")
    async def song_rows(ref: str):
        return {"ref": ref, "songs": await asyncio.to_thread(songs.song_table, folders.path_of(ref))}

    @app.post("/api/songs")
    async def save(body: dict):
        folder = folders.path_of(str(body.get("ref")))
        return {"diff": await asyncio.to_thread(songs.save_song, folder, str(body.get("song")),
                                                dict(body.get("fields") or {}))}

    @app.post("/api/preprocess")
    async def preprocess(body: dict):
        folder = folders.path_of(str(body.get("ref")))
        out = folders.path_of(str(body["out"])) if body.get("out") else folder / "tensors"
        model = str(body.get("model") or "turbo")
        if model not in forms.group_choices("model"):
            raise SidestepError(f"model={model}: no such model option; choose from "
                                f"{', '.join(forms.group_choices('model'))}")
        args = [f"audio_dir={quoted(str(folder))}", f"out_dir={quoted(str(out))}", f"model={model}", PLAIN]
        args += [f"trigger_tag={quoted(str(body['trigger_tag']))}"] if body.get("trigger_tag") else []
        task = tasks.start(str(body["ref"]), "preprocess", args, console_log(folder), folder)
        return {"command": shown(task.argv), "out": str(out)}

    @app.get("/api/task/events")
    async def task_events(ref: str, request: Request):
        async def changes():
            seen = None
            while not await request.is_disconnected():
                task = tasks.get(ref)
                state = task.as_dict() if task else None
                if state != seen:
                    seen = state
                    yield f"data: {json.dumps(state)}\n\n"
                await asyncio.sleep(0.5)
        return StreamingResponse(changes(), media_type="text/event-stream", headers=EVENTS)

    return app


def _page(name: str):
    async def page():
        return FileResponse(STATIC / name, media_type="text/html")
    return page


def _task_state(tasks: Processes, ref: str) -> dict:
    """Whether a command the studio started works on this run (or on the sweep it is a job of)."""
    running = [task for task in (tasks.get(ref), tasks.get(ref.rpartition("/")[0])) if task is not None]
    return {"task_running": any(task.returncode is None for task in running)}


def _run(folders: Folders, ref, tasks: Optional[Processes] = None) -> Path:
    """A training run's folder (or one the studio is starting a run in, before Hydra has written its record)."""
    path = folders.path_of(str(ref))
    if not is_training_run(path) and (tasks is None or tasks.get(str(ref)) is None):
        raise SidestepError(f"{ref}: not a training run")
    return path


def _checkpoint(run: Path, name) -> Path:
    """The run itself (its adapter, or its newest checkpoint), or one of its `checkpoints/step-N`."""
    if not name:
        return run
    path = run / "checkpoints" / str(name)
    if not str(name).startswith("step-") or "/" in str(name) or not path.is_dir():
        raise SidestepError(f"{name}: no such checkpoint in {run}")
    return path


def _number(value, name: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SidestepError(f"{name}: expected a number, got {value!r}") from None


def root_of(folders: Folders, folder: Path) -> Path:
    return folders.roots[int(folders.ref(folder).partition("/")[0])]


def _plan_start(folders: Folders, body: dict, with_summary: bool = True) -> dict:
    """The command a new run or sweep will be, checked like the command line would check it, and its summary."""
    sweep = bool(body.get("sweep"))
    typed = overrides.checked([str(o) for o in body.get("overrides") or []], sweep)
    root = folders.path_of(str(body.get("folder") or "0"))
    jobs = overrides.combinations(typed) if sweep else [typed]
    resolved = [overrides.composed(job) for job in jobs]
    cfg, hydra_dirs = resolved[0]
    folder = overrides.under(root, hydra_dirs.sweep if sweep else hydra_dirs.run)
    args = train_args(typed, folder, sweep)
    planned = {"command": shown(command("train", args)), "args": args, "folder": str(folder), "sweep": sweep,
               "jobs": len(jobs), "ref": f"{folders.ref(root)}/{folder.relative_to(root).as_posix()}"}
    if with_summary:
        # torch, PEFT and diffusers load on the first check, not when the studio starts (the page is up in ~2 s)
        from sidestep.studio import plan

        shown_folder = str(folder / "0") if sweep else str(folder)
        planned["summary"] = plan.summary(cfg, shown_folder)
    return planned


def write_report(folder: Path) -> None:
    """What `python -m sidestep.report DIR` writes: each run's page, and for a sweep the comparison."""
    runs = find_runs(folder)
    infos = [read_run(run, folder) for run in runs]
    for info in infos:
        write_run_page(info)
    if runs != [folder]:
        rows = rank(infos)
        write_tables(rows, folder)
        write_sweep_page(rows, folder)
