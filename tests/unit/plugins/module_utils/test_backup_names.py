# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Issue 16: which backups belong to a domain (its UUID, never the label in a file name),
names unique by construction, one backup of a domain at a time, a dest that cannot be
written refused before anything happens, and keep -1 refused.

Real backups are written (without libvirt) and read back; the integration target
proves the same against libvirtd with two domains whose names share a label.
"""

from __future__ import annotations

import datetime
import os
import shutil
import threading
import time

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils import _backup as bk  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput, OperationFailed  # noqa: E402

HAVE_ZSTD = shutil.which('zstd') is not None
KINDS = ['none', 'directory'] + (['zstd'] if HAVE_ZSTD else [])

UUID_A = '6f1c5c33-8d3e-4a53-b0a4-63e3c4c0e0a1'
UUID_B = '0d9e2a71-1b2c-4d5e-8f90-a1b2c3d4e5f6'
WHEN = datetime.datetime(2026, 11, 27, 2, 3, 4, 517000, tzinfo=datetime.timezone.utc)


def old_name(domain_name, when):
    """A name as backups were named before issue 16: ``<label>-<UTC stamp>``, built literally."""
    return '%s-%s' % (domain_name.replace(' ', '_'), when.strftime('%Y%m%dT%H%M%SZ'))


DOMAIN_XML = """<domain type='kvm'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='MiB'>64</memory>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
  </devices>
</domain>
"""


def fake_plan(name, uuid, disk):
    """A ``Plan`` as libvirt would fill it: one raw disk, no snapshot."""
    class Tree:
        by_name = {}

    plan = bk.Plan.__new__(bk.Plan)
    plan.name, plan.uuid = name, uuid
    plan.xml = DOMAIN_XML.format(name=name, uuid=uuid, disk=disk)
    plan.tree, plan.order, plan.current, plan.autostart = Tree(), [], None, False
    plan.files, plan.by_path, plan.warnings, plan.tpm_dirs = [], {}, [], []
    plan.versions = dict(libvirt='9.0.0', qemu='7.2.0', hostname='unit')
    plan._add_plain(disk, 'disk', target='vda', fmt='raw')
    return plan


def write_backup(tmp_path, dest, name, uuid, when=WHEN, kind='none', backup_name=None):
    disk = str(tmp_path / ('%s.raw' % bk.safe_label(name)))
    if not os.path.exists(disk):
        with open(disk, 'wb') as handle:
            handle.write(b'\xaa' * 4096)
    params = dict(format='directory' if kind == 'directory' else 'archive',
                  compression='none' if kind == 'none' else 'zstd', compression_level=None, threads=0,
                  if_running='fail')
    plan = fake_plan(name, uuid, disk)
    backup_name = backup_name or bk.free_name(str(dest), name, uuid, when, bk.SUFFIXES[kind])[0]
    return bk._write_backup(plan, str(dest), backup_name, bk.SUFFIXES[kind], kind, 3, params, when, 'shutoff')


# ---------------------------------------------------------------- names

def test_look_alike_domains_get_different_names_that_sort_by_time():
    # 'web 1' and 'web_1' share the label web_1; their UUIDs tell them apart.
    first = bk.backup_name('web 1', WHEN, UUID_A)
    other = bk.backup_name('web_1', WHEN, UUID_B)
    assert first == 'web_1-6f1c5c33-20261127T020304.517Z'
    assert other == 'web_1-0d9e2a71-20261127T020304.517Z'
    later = bk.backup_name('web 1', WHEN + datetime.timedelta(milliseconds=1), UUID_A)
    next_day = bk.backup_name('web 1', WHEN + datetime.timedelta(days=1), UUID_A)
    assert sorted([next_day, later, first]) == [first, later, next_day]
    assert bk.NAME_PATTERN.match(first + '.tar.zst').group('tag') == '6f1c5c33'
    # Old-style names and new-style names never match each other's pattern.
    assert not bk.OLD_NAME_PATTERN.match(first + '.tar.zst')
    assert not bk.NAME_PATTERN.match(old_name('web 1', WHEN) + '.tar.zst')


def test_a_taken_name_moves_on_by_a_millisecond(tmp_path):
    taken = bk.backup_name('web1', WHEN, UUID_A)
    (tmp_path / (taken + '.tar.zst')).touch()
    (tmp_path / (bk.backup_name('web1', WHEN + datetime.timedelta(milliseconds=1), UUID_A))).mkdir()
    name, when = bk.free_name(str(tmp_path), 'web1', UUID_A, WHEN, '.tar.zst')
    assert when == WHEN + datetime.timedelta(milliseconds=2)
    assert name == bk.backup_name('web1', when, UUID_A) != taken
    # Another domain's name at the same millisecond is no obstacle.
    assert bk.free_name(str(tmp_path), 'web1', UUID_B, WHEN, '.tar.zst')[1] == WHEN


def test_partial_pattern_by_uuid_matches_only_that_domain():
    pattern = bk.partial_pattern('web 1', UUID_A)
    assert pattern.match('.web_1-6f1c5c33-20261127T020304.517Z.tar.zst.partial-ab12')
    assert pattern.match('.renamed-6f1c5c33-20261127T020304.517Z.partial-ab12')
    assert not pattern.match('.web_1-0d9e2a71-20261127T020304.517Z.tar.zst.partial-ab12')
    assert not pattern.match('web_1-6f1c5c33-20261127T020304.517Z.tar.zst')


def test_write_never_replaces_an_existing_backup(tmp_path):
    dest = tmp_path / 'dest'
    dest.mkdir()
    name = bk.backup_name('web1', WHEN, UUID_A)
    (dest / (name + '.tar')).write_bytes(b'someone else')
    with pytest.raises(OperationFailed, match='appeared while the backup was written'):
        write_backup(tmp_path, dest, 'web1', UUID_A, backup_name=name)
    assert (dest / (name + '.tar')).read_bytes() == b'someone else'
    assert sorted(os.listdir(dest)) == [name + '.tar']


# ---------------------------------------------------------------- which backups are a domain's

@pytest.mark.parametrize('kind', KINDS)
def test_domain_backups_go_by_the_manifest_uuid_not_the_label(tmp_path, kind):
    dest = tmp_path / 'dest'
    dest.mkdir()
    a1 = write_backup(tmp_path, dest, 'web 1', UUID_A, kind=kind)
    b1 = write_backup(tmp_path, dest, 'web_1', UUID_B, kind=kind)
    a2 = write_backup(tmp_path, dest, 'web 1', UUID_A, when=WHEN + datetime.timedelta(seconds=1), kind=kind)
    # Backups written before names carried the UUID: old name, same label for both domains.
    old_a = write_backup(tmp_path, dest, 'web 1', UUID_A, when=WHEN - datetime.timedelta(days=1), kind=kind,
                         backup_name=old_name('web 1', WHEN - datetime.timedelta(days=1)))
    old_b = write_backup(tmp_path, dest, 'web_1', UUID_B, when=WHEN - datetime.timedelta(hours=1), kind=kind,
                         backup_name=old_name('web_1', WHEN - datetime.timedelta(hours=1)))
    # The domain renamed since: its old backup still has its UUID.
    renamed = write_backup(tmp_path, dest, 'db', UUID_A, when=WHEN - datetime.timedelta(days=2), kind=kind,
                           backup_name=old_name('db', WHEN - datetime.timedelta(days=2)))
    # Look-alikes that are no backup: never anyone's, so never removed by retention.
    (dest / ('web_1-6f1c5c33-20261128T000000.000Z' + bk.SUFFIXES[kind])).mkdir() if kind == 'directory' else \
        (dest / ('web_1-6f1c5c33-20261128T000000.000Z' + bk.SUFFIXES[kind])).write_bytes(b'junk' * 200)
    (dest / 'web_1-20200101T000000Z.tar.zst').write_bytes(b'not a backup')
    ours = [path for _name, path in bk.domain_backups(str(dest), UUID_A)]
    theirs = [path for _name, path in bk.domain_backups(str(dest), UUID_B)]
    assert ours == [renamed['path'], old_a['path'], a1['path'], a2['path']]
    assert theirs == [old_b['path'], b1['path']]
    # Names written before carry one label for both domains: that was the bug.
    assert os.path.basename(old_a['path']).split('-')[0] == os.path.basename(old_b['path']).split('-')[0] == 'web_1'
    assert bk.domain_backups(str(tmp_path / 'missing'), UUID_A) == []


@pytest.mark.skipif(not HAVE_ZSTD, reason='needs zstd')
def test_reading_the_manifest_stops_at_the_head_of_the_stream(tmp_path):
    dest = tmp_path / 'dest'
    dest.mkdir()
    disk = tmp_path / 'big.raw'
    with open(disk, 'wb') as handle:
        handle.write(os.urandom(4 << 20))
    plan = fake_plan('big', UUID_A, str(disk))
    params = dict(format='archive', compression='zstd', compression_level=None, threads=0, if_running='fail')
    outcome = bk._write_backup(plan, str(dest), bk.backup_name('big', WHEN, UUID_A), '.tar.zst', 'zstd', 3,
                               params, WHEN, 'shutoff')
    # Cut the archive in half: a reader that went past the manifest would fail.
    with open(outcome['path'], 'r+b') as handle:
        handle.truncate(os.path.getsize(outcome['path']) // 2)
    manifest = bk.read_manifest(outcome['path'])
    assert manifest['domain'] == dict(name='big', uuid=UUID_A, state='shutoff', autostart=False)
    assert bk.domain_backups(str(dest), UUID_A) == [(os.path.basename(outcome['path']), outcome['path'])]
    with pytest.raises(bk.BackupDamaged):
        bk.Reading(outcome['path']).run()


def test_read_manifest_of_something_else_is_none(tmp_path):
    (tmp_path / 'x.tar.zst').write_bytes(b'\x28\xb5\x2f\xfd' + b'garbage' * 100)
    (tmp_path / 'd').mkdir()
    (tmp_path / 'd' / 'manifest.json').write_text('{"format": "something else"}')
    assert bk.read_manifest(str(tmp_path / 'x.tar.zst')) is None
    assert bk.read_manifest(str(tmp_path / 'd')) is None
    assert bk.read_manifest(str(tmp_path / 'nothing')) is None


# ---------------------------------------------------------------- one backup of a domain at a time

def test_a_second_backup_of_the_domain_waits_for_the_first(tmp_path, monkeypatch):
    monkeypatch.setattr(bk, 'LOCK_DIR', str(tmp_path))
    order = []
    with bk.DomainLock(UUID_A) as first:
        assert first.path == str(tmp_path / ('kvm.snapshots-backup-%s.lock' % UUID_A))

        def second():
            with bk.DomainLock(UUID_A) as lock:
                order.append(('second', lock.waited))

        thread = threading.Thread(target=second)
        thread.start()
        with bk.DomainLock(UUID_B) as other:  # another domain does not wait
            assert other.waited == 0
        time.sleep(0.3)
        order.append(('first done', None))
    thread.join(10)
    assert order[0] == ('first done', None)
    assert order[1][0] == 'second' and order[1][1] >= 0.2
    assert os.listdir(tmp_path) == []  # each holder removes its lock file


def test_waiters_after_a_removed_lock_file_still_take_turns(tmp_path, monkeypatch):
    monkeypatch.setattr(bk, 'LOCK_DIR', str(tmp_path))
    inside = []
    overlaps = []
    lock = threading.Lock()

    def backup():
        for _round in range(20):
            with bk.DomainLock(UUID_A):
                with lock:
                    inside.append(1)
                    if len(inside) > 1:
                        overlaps.append(len(inside))
                time.sleep(0.001)
                with lock:
                    inside.pop()

    threads = [threading.Thread(target=backup) for _index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert overlaps == []
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- dest checked before anything happens

def test_read_only_dest_is_refused_as_such(tmp_path, monkeypatch):
    real = os.statvfs

    class ReadOnly:
        def __init__(self, path):
            self.info = real(path)
            self.f_flag = self.info.f_flag | os.ST_RDONLY

        def __getattr__(self, name):
            return getattr(self.info, name)

    # A read-only mount needs privileges a unit test does not have: only this call is faked.
    monkeypatch.setattr(bk.os, 'statvfs', ReadOnly)
    with pytest.raises(InvalidInput) as exc:
        bk._check_writable(str(tmp_path / 'a' / 'b'))
    assert str(exc.value) == ('cannot write a backup into %s (its nearest existing parent is %s): Read-only file '
                              'system: remount it read-write, or choose another dest (nothing was paused or written)'
                              % (tmp_path / 'a' / 'b', tmp_path))


def test_unwritable_dest_is_refused_not_called_full(tmp_path, monkeypatch):
    monkeypatch.setattr(bk.os, 'access', lambda path, mode: False)
    with pytest.raises(InvalidInput, match=r'^cannot write a backup into .*: Permission denied for uid \d+: run as '
                                           r'root \(become: true\), fix its permissions, or choose another dest'):
        bk._check_writable(str(tmp_path))


def test_writable_dest_passes_and_the_probe_leaves_nothing(tmp_path):
    bk._check_writable(str(tmp_path))
    bk._probe_writable(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_concurrent_runs_may_both_create_dest(tmp_path, monkeypatch):
    target = tmp_path / 'a' / 'b'
    real_make_dir = bk.make_dir

    def racing(path, mode=0o700):
        real_make_dir(path, mode)  # the other run was first
        real_make_dir(path, mode)

    monkeypatch.setattr(bk, 'make_dir', racing)
    bk.make_dirs(str(target))
    assert target.is_dir()


# ---------------------------------------------------------------- options

@pytest.mark.parametrize('keep', [-1, 0])
def test_keep_below_one_is_one_line_with_the_way_out(keep):
    params = dict(keep=keep, threads=0, compression_level=None, format='archive', compression='zstd',
                  shutdown_timeout=300, dest='/srv/backups')
    with pytest.raises(InvalidInput) as exc:
        bk._check_backup_options(params)
    assert str(exc.value) == ('keep must be 1 or more (it counts the backup just made), got %d: omit keep to keep '
                              'every backup' % keep)
