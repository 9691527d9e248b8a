"""`python -m sidestep.studio [FOLDER ...] [--host 127.0.0.1] [--port 0]`: the studio on this machine, until Ctrl-C.

Serves the runs under each FOLDER (default `outputs/`) and prints a link carrying a one-time token; the page sets
a cookie from it, and every request without it is refused.
"""

import argparse
import signal
import socket
import sys
from pathlib import Path
from typing import List

from sidestep.errors import SidestepError
from sidestep.ui.console import exit_on_user_error


def parse_args(argv: List[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sidestep.studio", description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[Path("outputs")],
                        help="folders of runs, sweeps and songs to serve (default: outputs/)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=0, help="default: a free port")
    return parser.parse_args(argv)


def free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def main(argv: List[str]) -> None:
    args = parse_args(argv)
    with exit_on_user_error():
        # fastapi and uvicorn (`pip install -e .[studio]`) load here, never with the other commands
        try:
            import uvicorn

            from sidestep.studio.app import create_app
        except ImportError as err:
            raise SidestepError(f"the studio needs {err.name}: pip install -e '.[studio]'") from None
        from sidestep.studio.security import Folders, new_token

        for folder in args.folders:
            folder.mkdir(parents=True, exist_ok=True)
        folders, token = Folders(args.folders), new_token()
        app = create_app(folders, token)
        port = args.port or free_port(args.host)
        print(f"Side-Step Studio: http://{args.host}:{port}/?token={token}\n"
              f"serving {', '.join(str(root) for root in folders.roots)}; Ctrl-C stops it", flush=True)
        # Ctrl-C and SIGTERM end the studio through `finally` below (uvicorn raises again the signal it stopped on);
        # SIGINT is not left ignored (a start in the background) for the runs it starts, which stop on it
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        try:
            # a page's event streams never end by themselves: Ctrl-C closes them after a second
            uvicorn.run(app, host=args.host, port=port, log_level="warning", timeout_graceful_shutdown=1)
        except KeyboardInterrupt:
            pass
        finally:
            app.state.processes.close()  # every run it started stops cleanly, with a checkpoint


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main(sys.argv[1:])
