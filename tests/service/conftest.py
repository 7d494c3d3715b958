"""One tiny trained run per test session, shared by every service test."""

from __future__ import annotations

import os

import pytest

from market_nn_plus_ultra.training import train
from tests.service._service_cases import KEY, KEY_ENV
from tests.training._train_cases import fixture_db, tiny_config


@pytest.fixture(scope="session")
def market_db(tmp_path_factory):
    return fixture_db(tmp_path_factory.mktemp("service_db"), rows=300)


@pytest.fixture(scope="session")
def run_dir(market_db, tmp_path_factory):
    """A tiny supervised run (train_zscore statistics in the checkpoint), about 3 s."""
    out = tmp_path_factory.mktemp("service_run") / "run"
    train(tiny_config(market_db, out, "windows.normalise=train_zscore"))
    return out


@pytest.fixture(scope="session", autouse=True)
def api_key():
    """The key every test app reads when it is created (a test-only variable name)."""
    os.environ[KEY_ENV] = KEY
    yield KEY
    os.environ.pop(KEY_ENV, None)
