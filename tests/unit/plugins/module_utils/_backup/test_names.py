# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/names.py (issue 16): names unique by construction, sorting by time, and the patterns that find
backups and the leftovers of killed runs, old-style names included."""

from __future__ import annotations

import datetime

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.names import (  # noqa: E402
    NAME_PATTERN,
    OLD_NAME_PATTERN,
    backup_name,
    free_name,
    partial_pattern,
)

from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    OTHER_UUID,
    UUID,
    WHEN_MS,
    old_name,
)

UUID_A, UUID_B, WHEN = UUID, OTHER_UUID, WHEN_MS


def test_old_style_names_and_their_partials():
    """Names written before issue 16 (``<label>-<UTC stamp>``, built literally here); ``domain_backups`` reads them."""
    assert OLD_NAME_PATTERN.match('web1-20261127T020304Z')
    assert OLD_NAME_PATTERN.match('_odd_name-20261127T020304Z')
    assert OLD_NAME_PATTERN.match('web1-20261127T020304Z.tar.zst')
    assert not OLD_NAME_PATTERN.match('web1-20261130T000000Z.tar.zst.bak')
    assert partial_pattern('web1').match('.web1-20261129T000000Z.tar.zst.partial-ab12')
    assert not partial_pattern('web1').match('.web1-2-20261129T000000Z.tar.zst.partial-ab12')


def test_look_alike_domains_get_different_names_that_sort_by_time():
    # 'web 1' and 'web_1' share the label web_1; their UUIDs tell them apart.
    first = backup_name('web 1', WHEN, UUID_A)
    other = backup_name('web_1', WHEN, UUID_B)
    assert first == 'web_1-6f1c5c33-20261127T020304.517Z'
    assert other == 'web_1-0d9e2a71-20261127T020304.517Z'
    later = backup_name('web 1', WHEN + datetime.timedelta(milliseconds=1), UUID_A)
    next_day = backup_name('web 1', WHEN + datetime.timedelta(days=1), UUID_A)
    assert sorted([next_day, later, first]) == [first, later, next_day]
    assert NAME_PATTERN.match(first + '.tar.zst').group('tag') == '6f1c5c33'
    # Old-style names and new-style names never match each other's pattern.
    assert not OLD_NAME_PATTERN.match(first + '.tar.zst')
    assert not NAME_PATTERN.match(old_name('web 1', WHEN) + '.tar.zst')


def test_a_taken_name_moves_on_by_a_millisecond(tmp_path):
    taken = backup_name('web1', WHEN, UUID_A)
    (tmp_path / (taken + '.tar.zst')).touch()
    (tmp_path / (backup_name('web1', WHEN + datetime.timedelta(milliseconds=1), UUID_A))).mkdir()
    name, when = free_name(str(tmp_path), 'web1', UUID_A, WHEN, '.tar.zst')
    assert when == WHEN + datetime.timedelta(milliseconds=2)
    assert name == backup_name('web1', when, UUID_A) != taken
    # Another domain's name at the same millisecond is no obstacle.
    assert free_name(str(tmp_path), 'web1', UUID_B, WHEN, '.tar.zst')[1] == WHEN


def test_partial_pattern_by_uuid_matches_only_that_domain():
    pattern = partial_pattern('web 1', UUID_A)
    assert pattern.match('.web_1-6f1c5c33-20261127T020304.517Z.tar.zst.partial-ab12')
    assert pattern.match('.renamed-6f1c5c33-20261127T020304.517Z.partial-ab12')
    assert not pattern.match('.web_1-0d9e2a71-20261127T020304.517Z.tar.zst.partial-ab12')
    assert not pattern.match('web_1-6f1c5c33-20261127T020304.517Z.tar.zst')
