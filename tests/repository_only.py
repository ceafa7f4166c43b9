"""Tests read nothing beside the repository: a clone on a new machine has no folder next
to it (what the tests need, such as OpenAI's API description, is kept in the repository).
An audit hook refuses, for the whole test session, any file opened in the folder
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


def rules_for(repository: Path) -> tuple[str, tuple[str, ...]]:
    """(the folder that holds ``repository``, the places in it that tests may read).

    Only places inside that folder can exempt anything: a temporary folder that holds the
    repository (as CI's clone does) or a home that holds it exempts nothing.
    """
    neighbourhood = str(repository.parent) + os.sep
    roots = {repository, Path(tempfile.gettempdir()), Path.home() / ".cache",
             *(Path(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix)),
             *(Path(p) for p in site.getsitepackages()), Path(site.getusersitepackages())}
    inside = (str(root.resolve()) + os.sep for root in roots)
    return neighbourhood, tuple(root for root in inside if root.startswith(neighbourhood))


_NEIGHBOURHOOD, _ALLOWED = rules_for(REPOSITORY)


def forbidden(path: str, *, rules: tuple[str, tuple[str, ...]] | None = None) -> bool:
    """Whether ``path`` lies beside the repository rather than in it (or in an allowed
    place)."""
    neighbourhood, allowed = rules or (_NEIGHBOURHOOD, _ALLOWED)
    full = os.path.abspath(path) + os.sep
    return full.startswith(neighbourhood) and not full.startswith(allowed)


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
