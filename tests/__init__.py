"""Side-Step's tests. Imported before any test module or conftest, so what is set here holds for everything the
suite imports and every command it starts.

One compute thread per process: `pytest -n 2` runs two workers on two cores, and torch's default (a thread per core
in each process, and in each command a test starts) makes them spin against each other: the studio's run test took
142 s in the suite before, 44 s after.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
