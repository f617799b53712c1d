from __future__ import annotations

import pytest
from viewer_fixtures import make_run


@pytest.fixture(scope="session")
def crafter_run(tmp_path_factory):
    """Crafter action space, the tiny preset tokenizer (S = 8)."""
    return make_run(tmp_path_factory.mktemp("viewer_s8"))


@pytest.fixture(scope="session")
def s4_run(tmp_path_factory):
    """A saved tokenizer folder with S = 4, as phase 0 writes one."""
    return make_run(tmp_path_factory.mktemp("viewer_s4"), S=4)


@pytest.fixture(scope="session")
def minecraft_run(tmp_path_factory):
    """The MineRL v0.4 action layout (15 components)."""
    return make_run(tmp_path_factory.mktemp("viewer_mc"), minecraft=True)
