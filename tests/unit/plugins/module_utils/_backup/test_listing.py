# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/listing.py (issue 13, vm_backup_info): the backups in a dest, newest first, with what their
manifests record and their sizes on disk; partial and foreign entries left out; the domain filter by name
and by UUID; a missing dest, a dest that is a file, a relative one.

Real backups are written by the module's own writer (without libvirt); sizes are observed with os.stat
and a walk of our own, not with the module's helper. The integration target vm_backup_info proves the
same against libvirtd with ls, tar and jq.
"""

from __future__ import annotations

import datetime
import os
import shutil

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.listing import (  # noqa: E402
    FIELDS,
    Place,
    backup_info,
    list_backups,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.names import backup_name  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.request import SUFFIXES  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import write_to_dest  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    HAVE_ZSTD,
    KINDS,
    OTHER_UUID,
    SNAPSHOT_XML,
    UUID,
    WHEN_MS,
    domain_xml,
    old_name,
    one_disk_contents,
    request_for,
)

SECOND = datetime.timedelta(seconds=1)


def make(tmp_path, dest, name, uuid, when, kind, snapshots=(), backup=None, data=64 << 10):
    """A real backup of domain ``name`` (one raw disk with ``data`` random bytes, ``snapshots``) written as
    ``kind`` into ``dest``."""
    disk = str(tmp_path / ('%s.raw' % name))
    if not os.path.exists(disk):
        with open(disk, 'wb') as handle:
            handle.truncate(1 << 20)
            handle.write(os.urandom(data))
    snaps = [(snap, SNAPSHOT_XML.format(name=snap, disk=disk)) for snap in snapshots]
    contents = one_disk_contents(disk, name=name, uuid=uuid, xml=domain_xml(disk, name, uuid), snapshots=snaps,
                                 current=snapshots[-1] if snapshots else None)
    return write_to_dest(contents, str(dest), backup or backup_name(name, when, uuid), when, 'shutoff',
                         request_for(dest, kind, domain=name))


def on_disk(path):
    """Bytes on disk, seen independently: an archive's length; a directory's files' allocated blocks."""
    if not os.path.isdir(path):
        return os.stat(path).st_size
    return sum(os.stat(os.path.join(base, name)).st_blocks * 512
               for base, _dirs, names in os.walk(path) for name in names)


def listing(dest, domain=None):
    return list_backups(Place('dest', str(dest)), domain)


@pytest.mark.parametrize('kind', KINDS)
def test_every_backup_newest_first_with_what_its_manifest_records(tmp_path, kind):
    dest = tmp_path / 'dest'
    dest.mkdir()
    a1 = make(tmp_path, dest, 'web1', UUID, WHEN_MS, kind, snapshots=['s1', 's2'])
    b1 = make(tmp_path, dest, 'db1', OTHER_UUID, WHEN_MS + SECOND, kind)
    a2 = make(tmp_path, dest, 'web1', UUID, WHEN_MS + 2 * SECOND, kind, snapshots=['s1'])
    backups, warnings = listing(dest)
    assert warnings == []
    assert [b['path'] for b in backups] == [a2['path'], b1['path'], a1['path']]
    assert all(tuple(b) == FIELDS for b in backups)
    newest = backups[0]
    assert newest['name'] == os.path.basename(a2['path'])[:len(os.path.basename(a2['path'])) - len(SUFFIXES[kind])]
    assert newest['id'] is None
    assert newest['time'] == (WHEN_MS + 2 * SECOND).replace(microsecond=0).isoformat().replace('+00:00', 'Z')
    assert (newest['domain'], newest['uuid']) == ('web1', UUID)
    assert (backups[1]['domain'], backups[1]['uuid']) == ('db1', OTHER_UUID)
    assert [b['snapshots'] for b in backups] == [1, 0, 2]
    for backup, written in zip(backups, (a2, b1, a1)):
        assert backup['size'] == backup['added'] == on_disk(written['path']) == written['size']
        assert backup['format'] == ('directory' if kind == 'directory' else 'archive')
        assert backup['compression'] == {'directory': None, 'none': 'none', 'zstd': 'zstd'}[kind]
        assert backup['verified'] is None


def test_backups_in_one_second_are_ordered_by_the_milliseconds_of_their_names(tmp_path):
    dest = tmp_path / 'dest'
    dest.mkdir()
    when = WHEN_MS.replace(microsecond=0)
    late = make(tmp_path, dest, 'web1', UUID, when.replace(microsecond=900000), 'none')
    early = make(tmp_path, dest, 'web1', UUID, when.replace(microsecond=100000), 'none')
    other = make(tmp_path, dest, 'aaa', OTHER_UUID, when.replace(microsecond=500000), 'none')
    backups, _warnings = listing(dest)
    assert [b['path'] for b in backups] == [late['path'], other['path'], early['path']]
    assert len({b['time'] for b in backups}) == 1


@pytest.mark.parametrize('kind', KINDS)
def test_the_domain_filter_takes_a_name_or_a_uuid(tmp_path, kind):
    dest = tmp_path / 'dest'
    dest.mkdir()
    a1 = make(tmp_path, dest, 'web1', UUID, WHEN_MS, kind)
    b1 = make(tmp_path, dest, 'db1', OTHER_UUID, WHEN_MS + SECOND, kind)
    # written before names carried the UUID, and with the domain's former name: the manifest decides
    a0 = make(tmp_path, dest, 'web1-old', UUID, WHEN_MS - SECOND, kind,
              backup=old_name('web1-old', WHEN_MS - SECOND))
    by_name = [b['path'] for b in listing(dest, 'web1')[0]]
    by_uuid = [b['path'] for b in listing(dest, UUID)[0]]
    assert by_name == [a1['path']]
    assert by_uuid == [a1['path'], a0['path']]
    assert [b['path'] for b in listing(dest, UUID.upper())[0]] == by_uuid
    assert [b['path'] for b in listing(dest, UUID.replace('-', ''))[0]] == by_uuid
    assert [b['path'] for b in listing(dest, 'db1')[0]] == [b1['path']]
    assert [b['path'] for b in listing(dest, OTHER_UUID)[0]] == [b1['path']]
    assert listing(dest, 'nosuch') == ([], [])
    assert listing(dest, '11111111-2222-3333-4444-555555555555') == ([], [])


@pytest.mark.parametrize('kind', KINDS)
def test_partial_and_foreign_entries_are_left_out(tmp_path, kind):
    dest = tmp_path / 'dest'
    dest.mkdir()
    good = make(tmp_path, dest, 'web1', UUID, WHEN_MS, kind)
    base = os.path.basename(good['path'])
    # a backup being written: hidden, under its partial name
    partial = dest / ('.%s.partial-1a2b3c' % backup_name('web1', WHEN_MS + SECOND, UUID))
    if kind == 'directory':
        partial.mkdir()
        (partial / 'manifest.json').write_bytes(open(os.path.join(good['path'], 'manifest.json'), 'rb').read())
    else:
        partial.write_bytes(open(good['path'], 'rb').read())
    # a hidden entry is never a complete backup, whatever its name says
    hidden = dest / ('.' + backup_name('web1', WHEN_MS + 4 * SECOND, UUID) + SUFFIXES[kind])
    shutil.copytree(good['path'], str(hidden)) if kind == 'directory' else os.link(good['path'], str(hidden))
    # not backup names at all, and a copy under a name no backup has
    (dest / 'notes.txt').write_text('hello')
    (dest / 'lost+found').mkdir()
    os.link(good['path'], str(dest / 'copy.tar.zst')) if kind != 'directory' else (dest / 'copy').mkdir()
    # a backup name of the wrong kind (a directory with an archive suffix, and the reverse)
    (dest / (backup_name('web1', WHEN_MS + 2 * SECOND, UUID) + '.tar')).mkdir()
    (dest / backup_name('web1', WHEN_MS + 3 * SECOND, UUID)).write_bytes(b'x')
    backups, warnings = listing(dest)
    assert [b['path'] for b in backups] == [good['path']]
    assert warnings == []
    assert base in os.listdir(str(dest))


def test_a_backup_name_without_a_readable_manifest_is_left_out_with_a_warning(tmp_path):
    dest = tmp_path / 'dest'
    dest.mkdir()
    good = make(tmp_path, dest, 'web1', UUID, WHEN_MS, 'none')
    junk = dest / (backup_name('web1', WHEN_MS + SECOND, UUID) + '.tar.zst')
    junk.write_bytes(b'\x28\xb5\x2f\xfd' + b'garbage' * 100)
    other = dest / (backup_name('db1', WHEN_MS + SECOND, OTHER_UUID) + '.tar.zst')
    other.write_bytes(b'not a backup')
    backups, warnings = listing(dest)
    assert [b['path'] for b in backups] == [good['path']]
    assert sorted(warnings) == sorted('%s is not listed: it has no readable vm_backup manifest (damaged, or not a '
                                      'backup made by vm_backup)' % path for path in (junk, other))
    # by UUID, a name with another domain's UUID tag is not even opened
    assert listing(dest, UUID)[1] == ['%s is not listed: it has no readable vm_backup manifest (damaged, or not '
                                      'a backup made by vm_backup)' % junk]


@pytest.mark.skipif(not HAVE_ZSTD, reason='needs zstd')
def test_only_the_head_of_an_archive_is_read(tmp_path):
    dest = tmp_path / 'dest'
    dest.mkdir()
    written = make(tmp_path, dest, 'web1', UUID, WHEN_MS, 'zstd', snapshots=['s1'], data=4 << 20)
    # Cut the archive short: a lister that read past the manifest would fail or leave it out.
    with open(written['path'], 'r+b') as handle:
        handle.truncate(os.path.getsize(written['path']) // 2)
    backups, warnings = listing(dest)
    assert warnings == []
    assert [(b['path'], b['snapshots'], b['size']) for b in backups] == [
        (written['path'], 1, os.path.getsize(written['path']))]


def test_an_empty_or_missing_dest_lists_nothing(tmp_path):
    (tmp_path / 'empty').mkdir()
    assert listing(tmp_path / 'empty') == ([], [])
    missing = tmp_path / 'missing'
    assert listing(missing) == ([], ['dest %s does not exist: no backups listed' % missing])
    result = backup_info(dict(dest=str(missing), domain=None, uri='qemu:///system'))
    assert result == dict(changed=False, backups=[], count=0,
                          warnings=['dest %s does not exist: no backups listed' % missing])
    assert not missing.exists()


def test_a_dest_that_is_a_file_or_relative_is_refused_in_one_line(tmp_path):
    dest = tmp_path / 'dest'
    dest.mkdir()
    written = make(tmp_path, dest, 'web1', UUID, WHEN_MS, 'none')
    with pytest.raises(InvalidInput) as caught:
        listing(written['path'])
    assert str(caught.value) == ('dest %s is not a directory: give the directory vm_backup wrote the backups into '
                                 '(its dest), not a backup in it' % written['path'])
    with pytest.raises(InvalidInput, match="dest must be an absolute path, got 'backups'"):
        listing('backups')


def test_backup_info_counts_and_changes_nothing(tmp_path):
    dest = tmp_path / 'dest'
    dest.mkdir()
    make(tmp_path, dest, 'web1', UUID, WHEN_MS, 'none')
    make(tmp_path, dest, 'db1', OTHER_UUID, WHEN_MS, 'none')
    before = sorted((p, os.stat(str(dest / p)).st_mtime_ns) for p in os.listdir(str(dest)))
    result = backup_info(dict(dest=str(dest), domain='db1', uri='qemu:///system'))
    assert result['changed'] is False and result['count'] == 1 and 'warnings' not in result
    assert result['backups'][0]['domain'] == 'db1'
    assert sorted((p, os.stat(str(dest / p)).st_mtime_ns) for p in os.listdir(str(dest))) == before
