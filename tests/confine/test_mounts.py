"""The exec helper's namespaces: what happens when the kernel refuses them."""

from __future__ import annotations

import socket

import pytest

from boundary_audit.confine import helper
from boundary_audit.confine.errors import ConfinementUnavailable


def _refuse(_flags: int) -> None:
    raise ConfinementUnavailable("cannot create a user namespace: Operation not permitted")


def test_without_user_namespaces_the_covers_are_skipped_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(helper, "enter_user_namespace", _refuse)
    args = helper._HelperArgs(command=["true"], cover_dirs=["/nonexistent"])
    ours, theirs = socket.socketpair()
    with ours, theirs:
        helper._enter_sandbox(theirs.fileno(), args)  # no mount was attempted
        theirs.close()
        status = ours.recv(4096)
    assert status.startswith(helper.WARNING_PREFIX)
    assert b"NOT hidden" in status
    assert status.endswith(b"\n")
    assert status.count(b"\n") == 1


def test_with_isolation_asked_a_refused_namespace_is_fatal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse_net(_flags: int = 0) -> None:
        raise ConfinementUnavailable("no user namespaces")

    monkeypatch.setattr(helper, "enter_network_namespace", refuse_net)
    args = helper._HelperArgs(command=["true"], isolate_port=8080, cover_dirs=["/x"])
    with pytest.raises(ConfinementUnavailable):
        helper._enter_sandbox(-1, args)


def test_cover_paths_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="absolute"):
        helper.helper_argv("python", [80], 3, ["true"], cover_dirs=["relative"])
