# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/files.py: paths and their parents, private files and directories, the read loop, and the
writers that must put every byte where it belongs and leave zero runs as holes.

The restore writer's edges (offsets and lengths that are not multiples of a zero run) are
what mutation testing (tests/README.md) found unguarded: a restored disk's allocation
depends on them.
"""

from __future__ import annotations

import errno
import os
import re
import stat

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup import files  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.errors import BackupDamaged  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.files import (  # noqa: E402
    CHUNK,
    ZERO_RUN,
    SparseWriter,
    ancestors,
    copy_regions,
    create_file,
    data_regions,
    existing_parent,
    make_dirs,
    missing_dirs,
    read_regions,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (  # noqa: E402
    InvalidInput,
    OperationFailed,
)
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    allocated,
    holes_here,
    needs_holes,
    random_layout,
    write_sparse,
)

RUN = ZERO_RUN


# ---------------------------------------------------------------- paths

def test_ancestors_go_up_nearest_first():
    assert list(ancestors('/a/b/c')) == ['/a/b', '/a', '/']
    assert list(ancestors('disks/00-a')) == ['disks']
    assert list(ancestors('tpm/tpm2/x')) == ['tpm/tpm2', 'tpm']
    assert list(ancestors('/')) == [] and list(ancestors('manifest.json')) == []


def test_missing_dirs_and_the_existing_parent(tmp_path):
    deep = tmp_path / 'a' / 'b'
    assert missing_dirs(str(deep)) == [str(tmp_path / 'a'), str(deep)]
    assert existing_parent(str(deep)) == str(tmp_path)
    assert missing_dirs(str(tmp_path)) == [] and existing_parent(str(tmp_path)) == str(tmp_path)
    (tmp_path / 'a').mkdir()
    assert missing_dirs(str(deep)) == [str(deep)]
    assert existing_parent(str(deep)) == str(tmp_path / 'a')
    # a file where a directory should be is missing as a directory: make_dirs refuses it, creating nothing
    (tmp_path / 'f').write_bytes(b'')
    assert missing_dirs(str(tmp_path / 'f' / 'x')) == [str(tmp_path / 'f'), str(tmp_path / 'f' / 'x')]
    with pytest.raises(InvalidInput, match=re.escape('%s exists and is not a directory' % (tmp_path / 'f'))):
        make_dirs(str(tmp_path / 'f' / 'x'))


def test_create_file_and_dirs_ignore_the_umask(tmp_path):
    old = os.umask(0)
    try:
        fd = create_file(str(tmp_path / 'f'))
        os.close(fd)
        make_dirs(str(tmp_path / 'a' / 'b'))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / 'f').st_mode) == 0o600
    assert stat.S_IMODE(os.stat(tmp_path / 'a').st_mode) == 0o700
    assert stat.S_IMODE(os.stat(tmp_path / 'a' / 'b').st_mode) == 0o700


def test_concurrent_runs_may_both_create_dest(tmp_path, monkeypatch):
    target = tmp_path / 'a' / 'b'
    real_make_dir = files.make_dir

    def racing(path, mode=0o700):
        real_make_dir(path, mode)  # the other run was first
        real_make_dir(path, mode)

    monkeypatch.setattr(files, 'make_dir', racing)
    make_dirs(str(target))
    assert target.is_dir()


# ---------------------------------------------------------------- reading

def test_read_regions_reports_a_file_that_ends_early(tmp_path):
    path = tmp_path / 'f'
    path.write_bytes(b'x' * 100)
    fd = os.open(str(path), os.O_RDONLY)
    try:
        got = []
        with pytest.raises(OperationFailed, match='^file shrank while being read at offset 100$'):
            for pos, _buf, count in read_regions(fd, [(0, 200)], lambda: bytearray(64)):
                got.append((pos, count))
                assert len(got) < 10, 'read on past the end of the file'
        assert got == [(0, 64), (64, 36)]
        with pytest.raises(BackupDamaged, match='^gone at 100$'):
            list(read_regions(fd, [(90, 20)], lambda: bytearray(64), short=lambda pos: BackupDamaged('gone at %d' % pos)))
    finally:
        os.close(fd)


# ---------------------------------------------------------------- writing

def test_sparse_writer_leaves_zero_runs_as_holes(tmp_path):
    needs_holes(tmp_path)
    path = tmp_path / 'out'
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        writer = SparseWriter(fd)
        buf = bytearray(CHUNK)
        buf[RUN * 3:RUN * 3 + 10] = b'x' * 10                 # a few bytes inside one run
        buf[RUN * 5 + 100:RUN * 6 + 200] = b'y' * (RUN + 100)  # across a run boundary: two runs
        buf[-1] = 1                                            # the last byte
        writer.write(0, buf, len(buf))
        # a second call at an offset that is not on a run boundary: the runs are the file's, not the buffer's
        tail = bytearray(2 * RUN)
        tail[RUN - 4096 - 7] = 0x5a                            # in the run the call starts inside
        tail[2 * RUN - 1] = 0x5b                               # in the run after
        writer.write(16 * RUN + 4096, tail, len(tail))
        size = 16 * RUN + 4096 + len(tail)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
    expected = bytearray(size)
    expected[:len(buf)] = buf
    expected[16 * RUN + 4096:] = tail
    assert path.read_bytes() == bytes(expected)
    # the non-zero runs are data, every other run is a hole
    assert allocated(path) == [(3 * RUN, RUN), (5 * RUN, 2 * RUN), (15 * RUN, RUN),
                               (16 * RUN + 4096, RUN - 4096), (18 * RUN, 4096)]
    assert os.stat(path).st_blocks * 512 < 6 * RUN


def written(tmp_path, offset, buf, size):
    """Write ``buf`` at ``offset`` through SparseWriter into a file of ``size``; (its bytes, its data regions)."""
    path = tmp_path / 'out'
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        SparseWriter(fd).write(offset, buf, len(buf))
        os.ftruncate(fd, size)
        regions = data_regions(fd, size)
    finally:
        os.close(fd)
    return path.read_bytes(), regions


def test_data_after_zeros_lands_at_its_offset_and_the_zeros_stay_holes(tmp_path):
    # the buffer ends in data after three zero runs: the last, pending run is written at its own offset
    buf = bytearray(4 * RUN)
    buf[3 * RUN + 5:3 * RUN + 9] = b'tail'
    content, regions = written(tmp_path, RUN, buf, 5 * RUN)
    assert content == bytes(RUN) + bytes(buf)
    assert regions == [(4 * RUN, RUN)]


def test_zero_runs_are_found_on_the_file_grid_not_the_buffer_grid(tmp_path):
    # written at half a run: the first (partial) run holds data, the rest of the buffer is zero
    buf = bytearray(3 * RUN)
    buf[0] = 1
    content, regions = written(tmp_path, RUN // 2, buf, 4 * RUN)
    assert content[RUN // 2] == 1 and content.count(0) == len(content) - 1
    assert regions == [(RUN // 2, RUN // 2)]


def test_zeros_at_the_end_of_a_short_buffer_stay_holes(tmp_path):
    # a buffer that ends part way into a run, in zeros: nothing written past the data
    buf = bytearray(RUN + 100)
    buf[:4] = b'head'
    content, regions = written(tmp_path, 0, buf, 2 * RUN)
    assert content[:4] == b'head' and content.count(0) == len(content) - 4
    assert regions == [(0, RUN)]


def test_a_dense_buffer_is_written_whole(tmp_path):
    buf = bytes(range(256)) * (3 * RUN // 256 + 1)
    content, regions = written(tmp_path, 7, buf, 7 + len(buf))
    assert content == bytes(7) + buf
    assert regions == [(0, 7 + len(buf))]


def within(inner, outer):
    """Whether every region of ``inner`` lies inside one region of ``outer``."""
    return all(any(o <= i and i + n <= o + m for o, m in outer) for i, n in inner)


def test_copy_regions_falls_back_to_read_and_write(tmp_path, monkeypatch):
    """Where the kernel cannot copy between the two files (other file systems, old kernels)."""
    def refuse(*_args):
        raise OSError(errno.EXDEV, 'Invalid cross-device link')
    monkeypatch.setattr(files.os, 'copy_file_range', refuse)
    _rng, data, regions = random_layout(7)
    write_sparse(tmp_path / 'src', data, regions)
    src = os.open(str(tmp_path / 'src'), os.O_RDONLY)
    dst = os.open(str(tmp_path / 'dst'), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        copy_regions(src, dst, regions)
        os.ftruncate(dst, len(data))
    finally:
        os.close(src)
        os.close(dst)
    assert (tmp_path / 'dst').read_bytes() == bytes(data)
    if holes_here(tmp_path):
        # no data where the source has a hole (zeros it holds may become holes)
        assert within(allocated(tmp_path / 'dst'), allocated(tmp_path / 'src'))
