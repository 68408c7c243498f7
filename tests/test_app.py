"""create_app: what the app does at start-up beyond wiring routes."""

from __future__ import annotations

import gc

import pytest

from inbox_asgi.app import create_app
from inbox_asgi.config import Settings

from .conftest import PUBLIC

pytestmark = pytest.mark.anyio


async def test_start_up_freezes_what_lives_as_long_as_the_process() -> None:
    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    app = create_app(Settings(public=str(PUBLIC)))
    async with app.router.lifespan_context(app):
        # The app itself (and every module) is out of the collector's generations.
        assert gc.get_freeze_count() > 1000
    gc.unfreeze()
