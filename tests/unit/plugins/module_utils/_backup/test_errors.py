# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/errors.py: sizes in messages read as a user expects."""

from __future__ import annotations

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.errors import human_size  # noqa: E402

KIB = 1024


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
    assert human_size(num) == text
