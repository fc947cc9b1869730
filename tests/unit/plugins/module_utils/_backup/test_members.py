# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/members.py: the path rules every member of a backup must pass, and the directories members need."""

from __future__ import annotations

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.errors import UnsafeMember  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.members import (  # noqa: E402
    check_relative,
    member_dirs,
    member_path,
)


@pytest.mark.parametrize('name', ['top/manifest.json', 'top/disks/00-a.qcow2', 'top/', 'top'])
def test_member_path_accepts_members_of_the_backup(name):
    assert member_path(name, 'top') == name.rstrip('/').partition('/')[2]


@pytest.mark.parametrize('name, why', [
    ('top/../evil', "'..'"),
    ('../top/x', "'..'"),
    ('top/disks/../../etc/passwd', "'..'"),
    ('/etc/passwd', 'absolute'),
    ('/top/x', 'absolute'),
    ('top//x', 'normalised'),
    ('top/./x', 'normalised'),
    ('other/x', 'outside'),
    ('top\x00/x', 'NUL'),
    ('', 'empty'),
])
def test_member_path_refuses_escapes(name, why):
    with pytest.raises(UnsafeMember, match=why):
        member_path(name, 'top')


def test_check_relative_is_strict():
    assert check_relative('disks/00-a.qcow2') == 'disks/00-a.qcow2'
    for bad in ('..', 'a/..', '/a', 'a/', 'a//b', './a', None, 7):
        with pytest.raises(UnsafeMember):
            check_relative(bad)


def test_member_dirs_come_parents_first_in_the_order_the_names_need_them():
    names = ['domain.xml', 'snapshots/0001.xml', 'tpm/tpm2/a/x', 'disks/00-a', 'tpm/tpm2/b', 'snapshots/0002.xml',
             'tpm/other/y']
    assert member_dirs(names) == ['snapshots', 'tpm', 'tpm/tpm2', 'tpm/tpm2/a', 'disks', 'tpm/other']
    assert member_dirs(iter(['manifest.json'])) == []
