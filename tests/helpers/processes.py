"""Commands run in a fresh process, forked from a server that has already imported torch and the other heavy
libraries: the command still starts from a clean interpreter state (its own `sys.argv`, environment, working folder,
exit code, stdout and stderr), but skips importing them: about 7 of the 8.6 CPU seconds a `python -m sidestep.train`
start spends before its first line of work (measured), and far more wall time on a busy machine.

The server imports only third-party libraries, never `sidestep`, so module-level state (the rich console's width,
registered resolvers) is built by the command itself, as in a real start. A command can also be started in a
pseudo-terminal (`start_in_terminal`), and one that hands over to another with `os.execv` (`sidestep.rerun`) has
that one forked from the server as well.
"""

import atexit
import fcntl
import json
import multiprocessing
import os
import runpy
import struct
import subprocess
import sys
import tempfile
import termios
from functools import partial
from pathlib import Path
from typing import Callable, Dict, NoReturn, Optional, Sequence, Tuple

from pexpect.fdpexpect import fdspawn

PRELOADED = ["torch", "peft", "diffusers", "transformers", "accelerate", "hydra", "omegaconf", "safetensors",
             "scipy.signal", "soundfile", "rich", "av", "torch.utils.tensorboard", "matplotlib.figure",
             "matplotlib.image", "matplotlib.cm",
             # diffusers and transformers import their models on first use, each package's whole list at once
             "diffusers.models.autoencoders", "diffusers.models.transformers", "diffusers.pipelines.ace_step",
             "transformers.models.qwen3"]
EXEC_REQUEST = "exec.json"  # beside a command's output: the command it handed over to (see `_hand_over`)
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOADED)


def _enter(cwd: str, env: Dict[str, str], stdout: str, stderr: str) -> None:
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)  # a command it hands over to writes on
        os.dup2(target, fd)
        os.close(target)
    if env.get("PYTHONUNBUFFERED"):  # the server's streams were set up before: as `python -u` would have them
        for stream in (sys.stdout, sys.stderr):
            stream.reconfigure(write_through=True)
    os.execv = partial(_hand_over, os.path.join(os.path.dirname(stdout), EXEC_REQUEST))


def _hand_over(request: str, path: str, argv: Sequence[str]) -> NoReturn:
    """`os.execv(python, [python, "-m", module, ...])` in a forked command: as an exec, this process ends without its
    exit handlers and the named command takes its place, with its output, folder and environment; that command is
    forked from the server too (`FreshProcess.finish` starts it), so it starts from a clean interpreter state as an
    exec would, without importing torch again."""
    if path != sys.executable or list(argv[1:2]) != ["-m"]:
        raise NotImplementedError(f"a forked command can hand over only to python -m: {argv}")
    Path(request).write_text(json.dumps({"module": argv[2], "args": list(argv[3:]), "cwd": os.getcwd(),
                                         "env": dict(os.environ)}))
    os._exit(0)


def _run_as_main(module: str, args: Sequence[str]) -> None:
    """`python -m module args...`: the module runs as `__main__`; atexit handlers run as at a normal exit."""
    sys.argv = ["-m", *args]
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        atexit._run_exitfuncs()


def _module_main(module: str, args: Sequence[str], cwd: str, env: Dict[str, str], stdout: str, stderr: str) -> None:
    _enter(cwd, env, stdout, stderr)
    _run_as_main(module, args)


def _terminal_main(module: str, args: Sequence[str], cwd: str, env: Dict[str, str], tty: str, opened) -> None:
    """`python -m module args...` with a terminal for its stdin, stdout and stderr, as a session of its own whose
    controlling terminal that is (as a shell starts a command)."""
    os.setsid()
    fd = os.open(tty, os.O_RDWR)  # the first terminal a session leader opens becomes its controlling terminal
    opened.set()
    for target in (0, 1, 2):
        os.dup2(fd, target)
    os.close(fd)
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # the process start pointed it at /dev/null
    sys.stdout, sys.stderr = (open(n, "w", buffering=1, encoding="utf-8", closefd=False) for n in (1, 2))
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    try:
        _run_as_main(module, args)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


def _script_main(script: str, args: Sequence[str], cwd: str, env: Dict[str, str], stdout: str, stderr: str) -> None:
    """`python script args...`."""
    _enter(cwd, env, stdout, stderr)
    sys.argv = [script, *args]
    sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python script` puts its folder first
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        atexit._run_exitfuncs()


def _function_main(function: Callable, args: Sequence, cwd: str, env: Dict[str, str], stdout: str, stderr: str) -> None:
    _enter(cwd, env, stdout, stderr)
    try:
        function(*args)
    finally:
        atexit._run_exitfuncs()


class FreshProcess:
    """A started command; `finish()` waits for it (however long a busy machine makes it take) and gives a
    `subprocess.CompletedProcess` as `subprocess.run(..., capture_output=True, text=True)` would."""

    def __init__(self, target: Callable, what, args: Sequence, cwd: Path, env: Optional[Dict[str, str]] = None):
        self._folder = tempfile.TemporaryDirectory(prefix="sidestep-proc-")
        self._out, self._err = (os.path.join(self._folder.name, name) for name in ("stdout", "stderr"))
        self.args = [what, *args]
        self.process = _context.Process(target=target, args=(what, list(args), str(cwd), dict(env or os.environ),
                                                              self._out, self._err))
        self.process.start()
        self.pid = self.process.pid

    def finish(self) -> subprocess.CompletedProcess:
        self.process.join()
        request = Path(self._folder.name) / EXEC_REQUEST
        while request.exists():  # it handed over to another command (`os.execv`): that one's end is the end
            command = json.loads(request.read_text())
            request.unlink()
            self.args = [command["module"], *command["args"]]
            self.process = _context.Process(target=_module_main, args=(command["module"], command["args"],
                                                                       command["cwd"], command["env"], self._out,
                                                                       self._err))
            self.process.start()
            self.process.join()
        out, err = (Path(path).read_text(errors="replace") for path in (self._out, self._err))
        self._folder.cleanup()
        return subprocess.CompletedProcess(self.args, self.process.exitcode, out, err)


def start_module(module: str, *args: str, cwd: Path, env: Optional[Dict[str, str]] = None) -> FreshProcess:
    """`python -m module args...` in `cwd`, started; `.pid` to signal it, `.finish()` to wait for it."""
    return FreshProcess(_module_main, module, [str(a) for a in args], cwd, env)


def run_module(module: str, *args: str, cwd: Path, env: Optional[Dict[str, str]] = None) -> subprocess.CompletedProcess:
    """`python -m module args...` in `cwd`, to its end."""
    return start_module(module, *args, cwd=cwd, env=env).finish()


def run_script(script: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python script args...` in `cwd`, to its end."""
    return FreshProcess(_script_main, str(script), [str(a) for a in args], cwd).finish()


def run_function(function: Callable, *args, cwd: Path) -> subprocess.CompletedProcess:
    """`function(*args)` in a fresh process (a module-level function: it is named, not copied, to the process)."""
    return FreshProcess(_function_main, function, args, cwd).finish()


class TerminalProcess:
    """A started command in a pseudo-terminal: `child` is its pexpect side (`expect`, `sendline`, `read`),
    `finish()` waits for the command and gives its exit code."""

    def __init__(self, module: str, args: Sequence[str], cwd: Path, env: Optional[Dict[str, str]],
                 dimensions: Tuple[int, int], timeout: float):
        master, slave = os.openpty()
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", *dimensions, 0, 0))
        opened = _context.Event()
        self.process = _context.Process(target=_terminal_main, args=(module, list(args), str(cwd),
                                                                      dict(env or os.environ), os.ttyname(slave), opened))
        self.process.start()
        while not opened.wait(1):  # until then, the terminal would read as ended: nobody else holds it open
            if not self.process.is_alive():
                raise RuntimeError(f"python -m {module} ended before it opened its terminal")
        os.close(slave)  # the command's end is the terminal's end
        self.child = fdspawn(master, encoding="utf-8", timeout=timeout)
        self.pid = self.process.pid

    def finish(self) -> int:
        self.process.join()
        self.child.close()
        return self.process.exitcode


def start_in_terminal(module: str, *args: str, cwd: Path, env: Optional[Dict[str, str]] = None,
                      dimensions: Tuple[int, int] = (50, 200), timeout: float = 600) -> TerminalProcess:
    """`python -m module args...` in `cwd`, in a pseudo-terminal of `dimensions` (rows, columns): what a person at a
    terminal sees and types. `timeout`: how long an `expect` may wait, a bound on a wrong expectation only."""
    return TerminalProcess(module, [str(a) for a in args], cwd, env, dimensions, timeout)


class ForkedPopen:
    """What a caller of `subprocess.Popen` uses (`pid`, `poll`, `wait`, `send_signal`), for `python -m module ...`
    forked from the server: the studio's commands (`tests/test_studio_browser.py`)."""

    def __init__(self, argv: Sequence[str], out: str, cwd: Path, env: Dict[str, str]):
        if argv[:2] != [sys.executable, "-m"]:
            raise NotImplementedError(f"only python -m is forked: {argv}")
        self.process = _context.Process(target=_module_main, args=(argv[2], list(argv[3:]), str(cwd), env, out, out))
        self.process.start()
        self.pid = self.process.pid

    def poll(self) -> Optional[int]:
        return self.process.exitcode

    def wait(self) -> int:
        self.process.join()
        return self.process.exitcode

    def send_signal(self, sig: int) -> None:
        os.kill(self.pid, sig)
