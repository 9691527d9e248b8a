"""`python -m sidestep.tags SONGS_DIR add|remove|list|replace TAG [NEW] [--position prepend|append] [--dry-run]`:
edit the trigger tags in the captions of every song's sidecar at once.

`add` puts TAG first (or last) in each caption that lacks it, `remove` takes it out, `replace TAG NEW` renames it,
`list` counts the songs carrying each tag. `--dry-run` shows the diff of every sidecar and writes nothing.
"""

import argparse
import sys
from pathlib import Path
from typing import List

from rich.markup import escape
from rich.table import Table

from sidestep.analysis.trigger_tags import OPERATIONS, POSITIONS, count_tags, edit_folder
from sidestep.errors import SidestepError
from sidestep.ui.analysis_view import show_failures
from sidestep.ui.console import console, exit_on_user_error


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m sidestep.tags", description=(
        "Edit the trigger tags in the captions of every song's sidecar at once: add puts TAG first (or last), remove "
        "takes it out, replace TAG NEW renames it, list counts the songs carrying each tag."))
    parser.add_argument("songs_dir", type=Path, help="a folder of songs (searched recursively) with their sidecars")
    parser.add_argument("operation", choices=OPERATIONS)
    parser.add_argument("tag", nargs="?", help="the tag (add, remove, replace)")
    parser.add_argument("new", nargs="?", help="replace only: the tag's new text")
    parser.add_argument("--position", choices=POSITIONS, default="prepend", help="add only: where in the caption")
    parser.add_argument("--dry-run", action="store_true", help="show the diff of each sidecar, write nothing")
    args = parser.parse_args(argv)
    with exit_on_user_error():
        if args.operation == "list":
            counts, songs, failed = count_tags(args.songs_dir)
            table = Table(title="Caption tags", caption=f"{songs} songs", title_justify="left")
            table.add_column("tag")
            table.add_column("songs", justify="right")
            for tag, count in counts.most_common():
                table.add_row(escape(tag), str(count))
            console.print(table)
            show_failures(failed)
            return
        tag = (args.tag or "").strip()
        if not tag or "," in tag:
            raise SidestepError(f"{args.operation}: give one tag without commas (captions are comma-separated tags)")
        new = (args.new or "").strip()
        if args.operation == "replace" and (not new or "," in new):
            raise SidestepError("replace: give the tag and its new text, e.g. replace lofi lo-fi")
        if args.operation != "replace" and args.new is not None:
            raise SidestepError(f"{args.operation}: takes one tag; only replace takes a second (the new text)")
        changed, failed = edit_folder(args.songs_dir, args.operation, tag, new or None, args.position)
        for sidecar in changed:
            if args.dry_run:
                console.print(sidecar.diff(), markup=False, highlight=False, soft_wrap=True, end="")
            else:
                sidecar.save()
        verb = "would change" if args.dry_run else "changed"
        console.print(f"{verb} {len(changed)} sidecars in {args.songs_dir}", markup=False, highlight=False)
        show_failures(failed)


if __name__ == "__main__":
    main(sys.argv[1:])
