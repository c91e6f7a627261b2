"""The compiled kernels' cache: where an install cannot be written and its user has no home, import still works
and the machine code is cached in a private folder of this user's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("numba")

SCRIPT = textwrap.dedent(
    """
    import numba.core.caching as caching
    # A read-only install run by a user without a home (the bind mount this stands for needs root): numba then
    # finds no folder beside the source nor in a home, and only NUMBA_CACHE_DIR is left.
    caching.CacheImpl._locator_classes = [caching.UserProvidedCacheLocator]
    import numba, numpy as np
    from segfix.ops import kernels
    labels = np.arange(12, dtype=np.int64).reshape(3, 4)
    dy = np.zeros((3, 4), np.int8); dx = np.ones((3, 4), np.int8)
    out = kernels.shift_single(labels, dy, dx, 1, 1)
    assert (out[:, :3] == labels[:, 1:]).all() and (out[:, 3] == labels[:, 3]).all()
    print(numba.config.CACHE_DIR or "unset", kernels.shift_kernel_int8.stats.cache_hits.get(next(iter(
        kernels.shift_kernel_int8.signatures)), 0) if kernels.shift_kernel_int8.signatures else -1)
    """
)


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners")
def test_kernels_import_and_cache_where_numba_finds_no_folder(tmp_path):
    """numba refuses cache=True at import when it has nowhere to write ("no locator available"), which made
    ``import segfix`` fail in such containers. The kernels then cache in <tmp>/segfix-numba-<uid>: a second
    process loads them from there, and numba's own setting is left as it was."""
    env = {**os.environ, "TMPDIR": str(tmp_path), "NUMBA_CACHE_DIR": ""}
    env.pop("NUMBA_CACHE_DIR")
    runs = [subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True) for _ in range(2)]
    for run in runs:
        assert run.returncode == 0, run.stderr[-2000:]
    folder = tmp_path / f"segfix-numba-{os.getuid()}"
    assert any(p.suffix == ".nbi" for p in folder.rglob("*"))  # the index numba writes beside the machine code
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700)
    first, second = (run.stdout.split() for run in runs)
    assert first[0] == second[0] == "unset"  # only segfix's kernels were pointed at the folder
    assert int(first[1]) == 0 and int(second[1]) == 1  # compiled by the first process, loaded by the second


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX owners")
def test_a_cache_folder_others_can_write_is_never_used(tmp_path, monkeypatch):
    """Cached machine code is code numba runs: a folder another user could write into is refused."""
    from segfix.ops.kernels import private_cache_dir

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    folder = private_cache_dir()
    assert folder == str(tmp_path / f"segfix-numba-{os.getuid()}")
    os.chmod(folder, 0o777)
    assert private_cache_dir() is None
    os.chmod(folder, 0o700)
    os.rmdir(folder)
    os.symlink(tmp_path, folder)  # a link planted where the folder would be
    assert private_cache_dir() is None
