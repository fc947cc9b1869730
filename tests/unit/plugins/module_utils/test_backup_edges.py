# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Edges of _backup.py's pure parts that mutation testing (mutmut, tests/README.md) found unguarded.

The restore writer must put every byte where it belongs and leave zero runs as
holes, also at offsets and lengths that are not multiples of a zero run (what a
restored disk's allocation depends on); a snapshot's memory file belongs to the
files a definition refers to; sizes in messages read as a user expects.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils import _backup as bk  # noqa: E402

RUN = bk.ZERO_RUN
KIB = 1024


def written(tmp_path, offset, buf, size):
    """Write ``buf`` at ``offset`` through SparseWriter into a file of ``size``; (its bytes, its data regions)."""
    path = tmp_path / 'out'
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        bk.SparseWriter(fd).write(offset, buf, len(buf))
        os.ftruncate(fd, size)
        regions = bk.data_regions(fd, size)
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


def test_referenced_files_include_memory_files_and_skip_floppies():
    xml = ("<domainsnapshot><name>s</name><memory snapshot='external' file='/var/lib/libvirt/qemu/s.mem'/>"
           "<domain><devices>"
           "<disk type='file' device='disk'><source file='/img/a.qcow2'/><target dev='vda'/></disk>"
           "<disk type='file' device='floppy'><source file='/img/boot.img'/><target dev='fda'/></disk>"
           "<disk type='file' device='cdrom'><source file='/img/os.iso'/><target dev='sda'/></disk>"
           "</devices></domain></domainsnapshot>")
    assert sorted(bk.referenced_files(xml)) == ['/img/a.qcow2', '/var/lib/libvirt/qemu/s.mem']


@pytest.mark.parametrize('num, text', [
    (0, '0 B'),
    (1023, '1023 B'),
    (1024, '1.0 KiB'),
    (1536, '1.5 KiB'),
    (5 * KIB * KIB, '5.0 MiB'),
    (3 * KIB ** 3 // 2, '1.5 GiB'),
    (2048 * KIB ** 4, '2048.0 TiB'),
])
def test_human_size(num, text):
    assert bk.human_size(num) == text


@pytest.mark.parametrize('number, text', [(9000000, '9.0.0'), (7002022, '7.2.22'), (10010001, '10.10.1')])
def test_version_text_unpacks_libvirt_version_numbers(number, text):
    # the manifest records the libvirt and QEMU versions a backup was made with
    assert bk.version_text(number) == text
