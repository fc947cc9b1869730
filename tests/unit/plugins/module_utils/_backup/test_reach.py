# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/reach.py: who QEMU runs as (qemu.conf), and whether it can search every directory down to a restored
file (issue 15: a restore into a directory QEMU cannot enter leaves a domain that cannot start)."""

from __future__ import annotations

import os
import pwd

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup import reach  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.manifest import DirectoryEntry, FileEntry, Manifest  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.reach import (  # noqa: E402
    Identity,
    blocking_dir,
    conf_settings,
    identity_from_conf,
    qemu_identity,
    refuse_unreachable,
    restore_places,
    searchable,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput  # noqa: E402

# As Debian's libvirt 9.0 ships it: the build's defaults commented out, examples indented after the '#'.
DEBIAN_CONF = '''
# Some examples of valid values are:
#
#       user = "qemu"   # A user named "qemu"
#       user = "+0"     # Super user (uid=0)
#       user = "100"    # A user named "100" or a user with uid=100
#
#user = "libvirt-qemu"

# The group for QEMU processes run by the system instance. It can be
# specified in a similar way to user.
#group = "libvirt-qemu"

# Whether libvirt should dynamically change file ownership
# to match the configured user/group above. Defaults to 1.
# Set to 0 to disable file ownership changes.
#dynamic_ownership = 1
'''

ME = pwd.getpwuid(os.geteuid())


def identity(uid=64055, gid=64055, groups=(64055, 108), privileged=False):
    return Identity(uid=uid, gid=gid, groups=frozenset(groups), label='libvirt-qemu:libvirt-qemu', source='test',
                    privileged=privileged)


class Stat:
    def __init__(self, mode, uid=0, gid=0):
        self.st_mode, self.st_uid, self.st_gid = 0o40000 | mode, uid, gid


def test_the_shipped_defaults_are_read_and_the_examples_are_not():
    assert conf_settings(DEBIAN_CONF) == dict(user=('libvirt-qemu', 'default'), group=('libvirt-qemu', 'default'))


def test_a_setting_beats_the_shipped_default_and_the_last_one_counts():
    text = DEBIAN_CONF + '\nuser = "qemu"\n  group = "kvm"\nuser = "+107"\n'
    assert conf_settings(text) == dict(user=('+107', 'set'), group=('kvm', 'set'))


def test_identity_from_conf_resolves_names_and_uids():
    me = identity_from_conf('user = "%s"\n' % ME.pw_name)
    assert (me.uid, me.gid) == (ME.pw_uid, ME.pw_gid)
    assert set(os.getgrouplist(ME.pw_name, ME.pw_gid)) <= me.groups
    assert me.source == 'as set in /etc/libvirt/qemu.conf'
    by_uid = identity_from_conf('user = "+%d"\ngroup = "+4242"\n' % ME.pw_uid)
    assert (by_uid.uid, by_uid.gid) == (ME.pw_uid, 4242)
    # as libvirt does: the configured group, and the user's groups from its passwd primary group (Debian's
    # libvirt-qemu has kvm there, and QEMU runs with it although qemu.conf's group is libvirt-qemu)
    assert by_uid.groups == {4242} | set(os.getgrouplist(ME.pw_name, ME.pw_gid))
    assert ME.pw_gid in by_uid.groups


def test_a_missing_user_is_refused_naming_qemu_conf():
    with pytest.raises(InvalidInput, match='the user no-such-user-kvmsnap that /etc/libvirt/qemu.conf names'):
        identity_from_conf('user = "no-such-user-kvmsnap"\n')


def test_root_passes_every_directory_only_when_libvirt_keeps_its_capabilities():
    assert not identity_from_conf('user = "+0"\n').privileged
    assert identity_from_conf('user = "+0"\nclear_emulator_capabilities = 0\n').privileged
    assert not identity_from_conf('user = "+0"\nclear_emulator_capabilities = 1\n').privileged


def test_only_the_qemu_driver_has_a_qemu_user():
    assert qemu_identity('test:///default') is None
    session = qemu_identity('qemu:///session')
    assert (session.uid, session.source) == (os.geteuid(), 'the user of qemu:///session')


def test_the_system_instance_reads_the_given_qemu_conf(tmp_path):
    conf = tmp_path / 'qemu.conf'
    conf.write_text('user = "+4321"\ngroup = "+4322"\n')
    found = qemu_identity('qemu:///system', str(conf))
    assert (found.uid, found.gid) == (4321, 4322)
    assert found.source == 'as set in %s' % conf


@pytest.mark.parametrize('mode, uid, gid, expected', [
    (0o700, 0, 0, False),          # root's private directory
    (0o711, 0, 0, True),           # search for others
    (0o750, 0, 108, True),         # a supplementary group (kvm)
    (0o705, 0, 108, False),        # the group bits win for a member, even when others may
    (0o100, 64055, 0, True),       # the owner bits win for the owner
    (0o611, 64055, 0, False),
    (0o770, 0, 64055, True),
    (0o755, 0, 0, True),
])
def test_searchable_follows_the_mode_bits(mode, uid, gid, expected):
    assert searchable(Stat(mode, uid, gid), identity()) is expected


def test_a_privileged_root_passes_everything():
    assert searchable(Stat(0o000, 12, 12), identity(0, 0, (0,), privileged=True))
    assert not searchable(Stat(0o700, 12, 12), identity(0, 0, (0,)))


def me_identity():
    return identity(os.geteuid(), os.getegid(), os.getgroups() + [os.getegid()])


def test_blocking_dir_names_the_first_directory_on_the_way(tmp_path):
    deep = tmp_path / 'a' / 'b' / 'c'
    deep.mkdir(parents=True)
    assert blocking_dir(str(deep), me_identity()) is None
    os.chmod(str(tmp_path / 'a'), 0o600)     # no search for its owner either
    try:
        path, info = blocking_dir(str(deep), me_identity())
        assert path == str(tmp_path / 'a')
        assert info.st_mode & 0o777 == 0o600
        # a directory that does not exist yet is created searchable (0711), and so is all below it
        assert blocking_dir(str(tmp_path / 'new' / 'x'), me_identity()) is None
    finally:
        os.chmod(str(tmp_path / 'a'), 0o700)


def test_links_are_followed_to_the_real_directory(tmp_path):
    real = tmp_path / 'locked' / 'images'
    real.mkdir(parents=True)
    (tmp_path / 'link').symlink_to(real)
    os.chmod(str(tmp_path / 'locked'), 0o600)
    try:
        assert blocking_dir(str(tmp_path / 'link'), me_identity())[0] == str(tmp_path / 'locked')
    finally:
        os.chmod(str(tmp_path / 'locked'), 0o700)


def test_the_refusal_names_the_directory_the_user_and_the_mode_to_use(tmp_path, monkeypatch):
    disk_dir = tmp_path / 'moved'
    disk_dir.mkdir()
    os.chmod(str(disk_dir), 0o600)
    monkeypatch.setattr(reach, 'qemu_identity', lambda uri: me_identity())
    try:
        with pytest.raises(InvalidInput) as exc:
            refuse_unreachable('qemu:///system', [(str(disk_dir), 'its disk image %s/a.qcow2' % disk_dir)])
        assert str(exc.value) == (
            'QEMU runs as libvirt-qemu:libvirt-qemu, test, and cannot enter %s (mode 0600, owner %s:%s), so the '
            'restored domain could not open its disk image %s/a.qcow2 and would not start: give that directory '
            'search permission (chmod 0611 %s, or 0755), or restore with disk_dir in a directory QEMU can reach '
            '(nothing was written)' % (disk_dir, ME.pw_name, reach._group_name(os.getegid()), disk_dir, disk_dir))
        with pytest.raises(InvalidInput, match=r'cannot enter %s \(mode 0600, owner [^)]*\) on the way to %s/x, so'
                           % (disk_dir, disk_dir)):
            refuse_unreachable('qemu:///system', [(str(disk_dir / 'x'), 'its disk image')])
    finally:
        os.chmod(str(disk_dir), 0o700)
    refuse_unreachable('qemu:///system', [(str(disk_dir), 'its disk image')])
    monkeypatch.setattr(reach, 'qemu_identity', lambda uri: None)   # no QEMU (test:///default): nothing to check
    os.chmod(str(disk_dir), 0o600)
    try:
        refuse_unreachable('test:///default', [(str(disk_dir), 'its disk image')])
    finally:
        os.chmod(str(disk_dir), 0o700)


def test_the_places_are_what_qemu_opens_and_created_directories_are_searchable():
    files = [FileEntry(name='domain.xml', role='domain', size=1),
             FileEntry(name='disks/00-a.qcow2', role='disk', path='/x/a.qcow2', size=1),
             FileEntry(name='disks/01-b.qcow2', role='backing', path='/y/b.qcow2', size=1),
             FileEntry(name='nvram/a_VARS.fd', role='nvram', path='/var/lib/libvirt/qemu/nvram/a_VARS.fd', size=1),
             FileEntry(name='tpm/x', role='tpm', path='/var/lib/libvirt/swtpm/u/tpm2/x', size=1)]
    manifest = Manifest(name='n', created='2026-11-27T02:03:04Z', domain=dict(name='a', uuid='u'), files=files,
                        order=[])
    dest = {'disks/00-a.qcow2': '/d/a.qcow2', 'disks/01-b.qcow2': '/d/b.qcow2',
            'nvram/a_VARS.fd': '/var/lib/libvirt/qemu/nvram/a_VARS.fd'}
    assert restore_places(manifest, dest) == [('/d', 'its disk image /d/a.qcow2'), ('/d', 'its disk image /d/b.qcow2'),
                                              ('/var/lib/libvirt/qemu/nvram',
                                               'its NVRAM /var/lib/libvirt/qemu/nvram/a_VARS.fd')]
    assert int(DirectoryEntry.DEFAULT_MODE, 8) == reach.CREATED_MODE
    assert searchable(Stat(reach.CREATED_MODE), identity())
