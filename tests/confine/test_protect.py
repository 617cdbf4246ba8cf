"""Which paths a confined command gets covered (pure planning)."""

from __future__ import annotations

from boundary_audit.confine.protect import plan_covers, protected_paths

SHARED = {"/", "/tmp", "/home/u"}


def test_private_socket_dirs_are_covered_whole_and_shared_ones_file_by_file() -> None:
    plan = plan_covers(
        ["/home/u/.config/boundary-audit", "/home/u/.local/state/boundary-audit"],
        ["/tmp/boundary-audit.sock", "/run/user/1/qs-x/agent.sock"],
        shared=SHARED,
        keep_visible=["/work"],
    )
    assert plan.dirs == (
        "/home/u/.config/boundary-audit",
        "/home/u/.local/state/boundary-audit",
        "/run/user/1/qs-x",
    )
    assert plan.files == ("/tmp/boundary-audit.sock",)
    assert plan.notes == ()


def test_nested_covers_are_kept_once_and_files_inside_covers_dropped() -> None:
    plan = plan_covers(
        ["/home/u/.local/state/boundary-audit", "/home/u/.local/state/boundary-audit/spill"],
        ["/home/u/.local/state/boundary-audit/agent.sock"],
        shared=SHARED,
        keep_visible=[],
    )
    assert plan.dirs == ("/home/u/.local/state/boundary-audit",)
    assert plan.files == ()


def test_a_directory_holding_the_working_dir_is_not_covered_but_its_socket_is() -> None:
    plan = plan_covers(
        ["/srv/agent"], ["/srv/agent/agent.sock"], shared=SHARED, keep_visible=["/srv/agent/work"]
    )
    assert plan.dirs == ()
    assert plan.files == ("/srv/agent/agent.sock",)
    assert plan.notes
    assert "/srv/agent/work" in plan.notes[0]


def test_protected_paths_honour_the_environment(tmp_path: object) -> None:
    env = {"BOUNDARY_AUDIT_PROTECT": "/a:/b", "BOUNDARY_AUDIT_SPILL_DIR": "/s"}
    paths = [str(p) for p in protected_paths(["/ca"], env)]
    assert paths[-4:] == ["/s", "/a", "/b", "/ca"]
