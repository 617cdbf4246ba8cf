"""``boundary-audit rules``: usage and read errors are exit 2 with the cause."""

from __future__ import annotations

from pathlib import Path

from tests.support.processes import run_cli


def test_suggest_does_not_create_the_database_it_reads(tmp_path: Path) -> None:
    db = tmp_path / "none.db"
    result = run_cli("rules", "suggest", "--since", "7d", "--db", f"sqlite:///{db}", check=False)
    assert result.returncode == 2
    assert f"no database at {db}" in result.stderr
    assert not db.exists()


def test_a_session_must_be_an_id_or_the_start_of_one(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'empty.db'}"
    run_cli("tokens", "create", "--agent", "a", "--db", db)  # an empty store, made on purpose
    result = run_cli("rules", "suggest", "--session", "nope", "--db", db, check=False)
    assert result.returncode == 2
    assert "neither a session id nor the start of one" in result.stderr


def test_replay_names_the_bad_rule(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text('allowlist:\n  - "domain=ok.com"\n  - "host=bad.com"\n')
    db = f"sqlite:///{tmp_path / 'none.db'}"
    result = run_cli("rules", "replay", str(rules), "--since", "1h", "--db", db, check=False)
    assert result.returncode == 2
    assert "host=bad.com" in result.stderr


def test_a_history_is_required() -> None:
    result = run_cli("rules", "suggest", check=False)
    assert result.returncode == 2
    assert "--session" in result.stderr
