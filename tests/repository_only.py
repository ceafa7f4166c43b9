"""Tests read nothing beside the repository: a clone on a new machine has no folder next
to it (the OpenAI document the tests once read from ``../shared`` is kept in the repository
now). An audit hook refuses, for the whole test session, any file opened in the folder
that holds the repository but outside the repository itself; the interpreter, its
libraries, the temporary folder and the user's caches stay readable wherever they are."""

from __future__ import annotations

import os
import site
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]


class OutsideTheRepository(PermissionError):
    pass


def _allowed_roots() -> tuple[str, ...]:
    roots = {REPOSITORY, Path(tempfile.gettempdir()), Path.home() / ".cache",
             *(Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)),
             *(Path(p) for p in site.getsitepackages()), Path(site.getusersitepackages())}
    return tuple(str(root.resolve()) + os.sep for root in roots)


def forbidden(path: str) -> bool:
    """Whether ``path`` lies beside the repository rather than in it (or in an allowed
    place)."""
    full = os.path.abspath(path) + os.sep
    return full.startswith(_NEIGHBOURHOOD) and not full.startswith(_ALLOWED)


_NEIGHBOURHOOD = str(REPOSITORY.parent) + os.sep
_ALLOWED = _allowed_roots()


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event != "open" or not args:
        return
    path = args[0]
    if isinstance(path, (str, bytes, os.PathLike)) and forbidden(os.fsdecode(path)):
        raise OutsideTheRepository(f"a test read {os.fsdecode(path)!r}, outside the "
                                   f"repository {REPOSITORY}: keep what tests need inside it")


def install() -> None:
    """Refuse reads beside the repository from now on (audit hooks stay for the process).
    Nothing to guard when the repository sits at the root of the file system."""
    if REPOSITORY.parent != REPOSITORY.parent.parent:
        sys.addaudithook(_audit)
