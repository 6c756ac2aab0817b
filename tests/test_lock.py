"""The one-run-at-a-time lock is per database: a run elsewhere on the same server is not ours."""

from __future__ import annotations

import json
from collections.abc import Iterator

import psycopg
import pytest

from retailctl.store.lock import LOCK_NAMESPACE, PIPELINE_LOCK_ID
from tests.helpers import invoke


@pytest.fixture
def lock_in_another_database(reference_db_url: str) -> Iterator[None]:
    """The pipeline lock held in another database of the same server, as another install's run."""
    with psycopg.connect(reference_db_url, autocommit=True) as conn:
        conn.execute("select pg_advisory_lock(%s, %s)", (LOCK_NAMESPACE, PIPELINE_LOCK_ID))
        yield


def test_a_lock_in_another_database_does_not_block_this_one(
    cli_env: dict[str, str], lock_in_another_database: None
) -> None:
    result = invoke(["state", "set", "--last-sales-id", "42"], env=cli_env)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == ["next sales id: 1 -> 42"]


def test_status_does_not_name_a_holder_in_another_database(
    cli_env: dict[str, str], lock_in_another_database: None
) -> None:
    assert invoke(["db", "migrate"], env=cli_env).exit_code == 0  # status never migrates
    result = invoke(["status", "--json"], env=cli_env)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["lock_holder"] is None
