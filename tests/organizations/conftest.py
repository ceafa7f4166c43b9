from tests.proxy.upstream import upstream  # noqa: F401 - a fixture
