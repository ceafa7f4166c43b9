"""The test session reads nothing beside the repository (see tests/repository_only.py)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.repository_only import REPOSITORY, OutsideTheRepository, forbidden, rules_for


def test_a_file_beside_the_repository_cannot_be_opened_by_a_test():
    beside = REPOSITORY.parent / "another-project" / "data.json"
    assert forbidden(str(beside))
    with pytest.raises(OutsideTheRepository):
        open(beside, "rb")  # noqa: SIM115 - the open itself is what is refused


def test_files_in_the_repository_and_the_temporary_folder_stay_readable(tmp_path):
    assert not forbidden(str(REPOSITORY / "tests" / "openai" / "openapi.json"))
    with open(REPOSITORY / "pyproject.toml", "rb") as f:
        assert f.read(1)


@pytest.mark.parametrize("holder", [Path(tempfile.gettempdir()) / "ci-clone",
                                    Path.home() / "projects"])
def test_a_repository_cloned_into_a_temporary_folder_or_a_home_is_guarded_too(holder):
    """CI clones into a temporary folder: being temporary does not exempt its siblings."""
    rules = rules_for(holder / "binom-router")
    assert forbidden(str(holder / "another-project" / "data.json"), rules=rules)
    assert not forbidden(str(holder / "binom-router" / "tests" / "x.json"), rules=rules)
    assert not forbidden(str(Path(tempfile.gettempdir()) / "pytest-of-root" / "x"),
                         rules=rules)
