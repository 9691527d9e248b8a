"""The question engine behind `sidestep.wizard`: one question at a time, Enter takes the default, `back` returns to
the previous question, and every answer is checked at once and asked again, with the reason, when it is refused.

The engine knows nothing about configs: defaults, choices and checks come from a `Session` (the wizard's, which
asks the config tree). Without someone at the terminal, or with `ui.yes=true`, every question takes its default,
and a default that is refused stops with the reason.
"""

import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Protocol, Tuple, Union

from rich.console import Console
from rich.text import Text

from sidestep.errors import SidestepError

if sys.platform == "win32":
    import msvcrt
else:
    import termios

BACK = "back"
Answers = Dict[str, str]


@dataclass(frozen=True)
class Question:
    key: str  # a config key (`adapter.rank`), a config group (`optimizer`) or the wizard's own (`mode`, `name`)
    title: str
    kind: str = "value"  # value | path | group | meta: how the answer becomes a command-line override
    help: Union[str, Callable[[Answers], str]] = ""
    advanced: bool = False

    @property
    def label(self) -> str:
        return {"group": f"{self.key}=", "meta": ""}.get(self.kind, self.key)


class Session(Protocol):
    def applies(self, question: Question, answers: Answers) -> bool: ...
    def choices(self, question: Question, answers: Answers) -> Optional[List[str]]: ...
    def default(self, question: Question, answers: Answers) -> Optional[str]: ...
    def check(self, question: Question, value: str, answers: Answers) -> Tuple[Optional[str], List[str]]:
        """(why the answer is refused, or None; notes to show when it is accepted)"""


def ask_all(questions: List[Question], session: Session, console: Console, interactive: bool) -> Answers:
    answers: Answers = {}
    undone: Answers = {}  # answers taken back with `back`: offered again as the default
    history: List[int] = []
    i = 0
    while i < len(questions):
        question = questions[i]
        if not session.applies(question, answers):
            i += 1
            continue
        choices = session.choices(question, answers)
        default = undone.get(question.key) or session.default(question, answers)
        raw = _read(console, question, default, choices, answers) if interactive else ""
        if raw.lower() == BACK:
            if not history:
                console.print("  this is the first question")
                continue
            i = history.pop()
            undone[questions[i].key] = answers.pop(questions[i].key)
            continue
        value, problem, notes = raw or default, None, []
        if value is None:
            problem = f"{question.label or question.title}: needs an answer"
        elif choices is not None:
            value, problem = _pick(value, choices, question)
        elif question.kind == "path":
            value = str(Path(value).expanduser().resolve())  # relative to where the wizard runs
        if problem is None:
            problem, notes = session.check(question, value, answers)
        if problem is not None:
            if not interactive:
                raise SidestepError(problem)
            say(console, f"refused: {problem}", "red")
            continue
        answers[question.key] = value
        undone.pop(question.key, None)
        history.append(i)
        i += 1
        for note in notes:
            say(console, note, "green")
    return answers


def _read(console: Console, question: Question, default: Optional[str], choices: Optional[List[str]],
          answers: Answers) -> str:
    help_text = question.help(answers) if callable(question.help) else question.help
    console.print()
    if help_text:
        console.print(Text(f"  {help_text}", style="dim"))
    if choices:
        console.print(Text("  " + "  ".join(f"{n}) {c}" for n, c in enumerate(choices, 1)), style="cyan"))
    prompt = Text.assemble((question.title, "bold"), f" ({question.label})" if question.label else "",
                           (f" [{default}]" if default is not None else "", "cyan"), ": ")
    discard_typed_ahead(sys.stdin)
    try:
        return console.input(prompt).strip()
    except EOFError:
        raise SidestepError("the input ended before the last question; nothing was written") from None
    except KeyboardInterrupt:
        console.print()  # the prompt's line ends here, so "interrupted" stands on its own
        raise


def say(console: Console, message: str, style: str) -> None:
    """A refusal or note, indented under the question on every line, wrapped at spaces only (a path is never
    split), so it reads as one block however narrow the terminal."""
    first, rest = "  ", "  " + " " * (message.index(": ") + 2 if ": " in message[:40] else 0)
    lines = textwrap.wrap(message, width=max(40, console.width - 1), initial_indent=first, subsequent_indent=rest,
                          break_long_words=False, break_on_hyphens=False) or [first]
    for line in lines:
        console.print(Text(line, style=style), soft_wrap=True)


def discard_typed_ahead(stream) -> None:
    """Drop what was typed while the previous answer was being checked: it was meant for that question, and must
    not answer this one unseen."""
    try:
        if stream is not None and stream.isatty():
            if sys.platform == "win32":
                while msvcrt.kbhit():
                    msvcrt.getwch()
            else:
                termios.tcflush(stream.fileno(), termios.TCIFLUSH)
    except (OSError, ValueError):  # not a real terminal after all (a test harness's stream)
        pass


def _pick(value: str, choices: List[str], question: Question) -> Tuple[str, Optional[str]]:
    """A choice by name or by its number."""
    if value.isdigit() and 1 <= int(value) <= len(choices):
        return choices[int(value) - 1], None
    if value in choices:
        return value, None
    return value, f"{question.label or question.title}: {value!r} is not one of {', '.join(choices)}"
