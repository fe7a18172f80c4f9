"""clad_lite.provenance.git_sha: the commit of a checkout, a worktree included, without running git."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from clad_lite.provenance import git_sha


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to build the repositories")
def test_git_sha_of_a_checkout_and_of_a_worktree(tmp_path):
    def git(*args, cwd=tmp_path / "repo"):
        return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()

    (tmp_path / "repo").mkdir()
    git("init", "-q")
    (tmp_path / "repo" / "a.txt").write_text("a")
    git("add", "a.txt")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    head = git("rev-parse", "HEAD")
    (tmp_path / "repo" / "pkg").mkdir()
    assert git_sha(tmp_path / "repo" / "pkg") == head
    git("worktree", "add", "-q", "--detach", str(tmp_path / "wt"), "HEAD")
    assert git_sha(tmp_path / "wt" / "a.txt") == head
    git("worktree", "add", "-q", "-b", "side", str(tmp_path / "wt2"), "HEAD")
    assert git_sha(tmp_path / "wt2") == head  # a branch worktree: the ref lives in the common folder
    git("pack-refs", "--all")
    assert git_sha(tmp_path / "wt2") == head  # packed refs too
    assert git_sha(tmp_path / "elsewhere") is None  # not in a checkout
