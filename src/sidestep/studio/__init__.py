"""Side-Step Studio: a local web page over the same commands (`python -m sidestep.studio [outputs/]`).

Every run it starts is `python -m sidestep.train ...` in a subprocess, so it leaves an ordinary run folder; the
page reads runs with the report's readers and keeps no state of its own beyond its token. fastapi and uvicorn are
imported only here (`pip install -e .[studio]`): the CLI never loads them.
"""
