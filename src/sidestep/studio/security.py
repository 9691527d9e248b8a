"""Who may ask and what may be read: a one-time token (a cookie after the link), and paths only under the served
folders (no `..`, no absolute path, no symlink out)."""

import secrets
from pathlib import Path, PurePosixPath
from typing import List, Tuple

from sidestep.errors import SidestepError

COOKIE = "sidestep_studio"


class PathRefused(SidestepError):
    """A path that is not under a served folder."""


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_matches(given: str, token: str) -> bool:
    return bool(given) and secrets.compare_digest(given.encode(), token.encode())


class Folders:
    """The served folders; a reference to a file is `<folder number>/<path inside it>`, never a raw path."""

    def __init__(self, roots: List[Path]):
        self.roots: List[Path] = []
        for root in roots:
            self.add(root)

    def add(self, root: Path) -> int:
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise PathRefused(f"{root}: no such folder")
        if root not in self.roots:
            self.roots.append(root)
        return self.roots.index(root)

    def path_of(self, ref: str) -> Path:
        """The real path `ref` names, refused when it leaves its folder in any way."""
        number, _, inside = str(ref).partition("/")
        if not number.isdigit() or int(number) >= len(self.roots):
            raise PathRefused(f"{ref}: not a served folder")
        parts = PurePosixPath(inside).parts
        if inside.startswith(("/", "\\")) or ".." in parts or "\\" in inside or "\x00" in inside:
            raise PathRefused(f"{ref}: only paths inside a served folder")
        root = self.roots[int(number)]
        target = (root / inside).resolve()
        if target != root and root not in target.parents:
            raise PathRefused(f"{ref}: leads outside {root} (a symlink?)")
        return target

    def ref(self, path: Path) -> str:
        """The reference of a path under a served folder (the innermost folder that holds it)."""
        path = Path(path).resolve()
        for number, root in sorted(enumerate(self.roots), key=lambda item: -len(item[1].parts)):
            if path == root:
                return str(number)
            if root in path.parents:
                return f"{number}/{path.relative_to(root).as_posix()}"
        raise PathRefused(f"{path}: not under a served folder")

    def listing(self) -> List[Tuple[str, str]]:
        return [(str(number), str(root)) for number, root in enumerate(self.roots)]
