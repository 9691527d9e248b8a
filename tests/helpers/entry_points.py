"""An entry point's `main` run in this process, as its command line would run it."""

import sys

import pytest
from hydra.core.global_hydra import GlobalHydra

from sidestep import train
from sidestep.ui.app import run_app


def refused(capsys, call) -> str:
    """Run an entry point in this process; it must exit 2 with one line, which is returned."""
    GlobalHydra.instance().clear()
    with pytest.raises(SystemExit) as exit_:
        call()
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    return err


def hydra_app(monkeypatch, app, *args):
    monkeypatch.setattr(sys, "argv", ["sidestep", *args])
    return lambda: run_app(app) if app is train.main else app()
