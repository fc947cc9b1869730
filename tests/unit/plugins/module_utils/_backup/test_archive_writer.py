# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/archive_writer.py: the GNU sparse 1.0 map written before a file with holes (whole archives: test_write)."""

from __future__ import annotations

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.archive_writer import (  # noqa: E402
    sparse_map_block,
)


def test_sparse_map_block_reaches_the_real_size():
    block = sparse_map_block([(0, 512)], 4096)
    assert len(block) % 512 == 0
    assert block.rstrip(b'\x00') == b'2\n0\n512\n4096\n0\n'
    assert sparse_map_block([], 0).rstrip(b'\x00') == b'1\n0\n0\n'
