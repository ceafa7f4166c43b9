"""The test session reads nothing beside the repository (see tests/repository_only.py)."""

from __future__ import annotations

import pytest

from tests.repository_only import REPOSITORY, OutsideTheRepository, forbidden


def test_a_file_beside_the_repository_cannot_be_opened_by_a_test(tmp_path):
    beside = REPOSITORY.parent / "shared" / "openai" / "openapi.json"
    assert forbidden(str(beside))
    with pytest.raises(OutsideTheRepository):
        open(beside, "rb")  # noqa: SIM115 - the open itself is what is refused


def test_files_in_the_repository_and_the_temporary_folder_stay_readable(tmp_path):
    assert not forbidden(str(REPOSITORY / "tests" / "openai" / "openapi.json"))
    assert not forbidden(str(tmp_path / "anything"))
    with open(REPOSITORY / "pyproject.toml", "rb") as f:
        assert f.read(1)
