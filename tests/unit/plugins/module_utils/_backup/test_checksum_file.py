# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Issue 14: a file's digest is named for what it is (``piecewise_sha256``; manifests that call it ``sha256``
still verify and restore), and beside every backup ``<backup>.sha256`` holds what ``sha256sum`` prints for the
backup itself, so that plain ``sha256sum -c`` checks it. Checked here with hashlib and the real sha256sum.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.catalog import remove_backup  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.digest import PlainDigest, digest_bytes  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.errors import BackupDamaged  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.manifest import Manifest  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.names import partial_pattern  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.reading import Reading  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.request import read_request  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.restore import restore_backup  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.write import sums_line  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    HAVE_ZSTD,
    KINDS,
    UUID,
    manifest_data,
    write,
)

SHA256SUM = shutil.which('sha256sum')


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def every_file(top):
    found = []
    for base, _dirs, names in os.walk(top):
        found.extend(os.path.join(base, name) for name in names)
    return found


def kinds():
    return [kind for kind in KINDS if kind != 'zstd' or HAVE_ZSTD]


@pytest.mark.parametrize('kind', kinds())
def test_beside_every_backup_what_sha256sum_prints_for_it(tmp_path, kind):
    _disk, outcome = write(tmp_path, kind)
    dest = str(tmp_path / 'dest')
    assert outcome['checksum_file'] == outcome['path'] + '.sha256'
    assert sorted(os.listdir(dest)) == sorted([os.path.basename(outcome['path']),
                                               os.path.basename(outcome['checksum_file'])])
    with open(outcome['checksum_file']) as handle:
        lines = handle.read().splitlines()
    listed = {name: digest for digest, name in (line.split('  ', 1) for line in lines)}
    if kind == 'directory':
        # every file of the directory, the manifest and the checksum list included, paths from dest
        files = every_file(outcome['path'])
        assert sorted(listed) == sorted(os.path.relpath(path, dest) for path in files)
        assert len(files) == len(outcome['files']) + 2
    else:
        assert list(listed) == [os.path.basename(outcome['path'])]
    for name, digest in listed.items():
        assert digest == sha256_file(os.path.join(dest, name)), name
    # the manifest's own digests are the piecewise ones, not these
    assert outcome['files'][-1]['sha256'] not in listed.values()


@pytest.mark.skipif(SHA256SUM is None, reason='no sha256sum')
@pytest.mark.parametrize('kind', kinds())
def test_sha256sum_checks_it_and_a_flipped_byte_fails_it(tmp_path, kind):
    _disk, outcome = write(tmp_path, kind)
    dest = str(tmp_path / 'dest')
    sums = os.path.basename(outcome['checksum_file'])
    run = subprocess.run([SHA256SUM, '--strict', '-c', sums], cwd=dest, capture_output=True, text=True, check=False)
    assert run.returncode == 0 and run.stdout.count(': OK\n') == (len(outcome['files']) + 2 if kind == 'directory'
                                                                  else 1)
    victim = os.path.join(outcome['path'], 'disks/00-unit1.raw') if kind == 'directory' else outcome['path']
    with open(victim, 'r+b') as handle:
        handle.seek(os.path.getsize(victim) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x01]))
    run = subprocess.run([SHA256SUM, '-c', sums], cwd=dest, capture_output=True, text=True, check=False)
    assert run.returncode == 1
    assert [line for line in run.stdout.splitlines() if line.endswith(': FAILED')] == [
        '%s: FAILED' % os.path.relpath(victim, dest)]


@pytest.mark.parametrize('kind', kinds())
def test_removing_a_backup_removes_its_checksum_file(tmp_path, kind):
    _disk, outcome = write(tmp_path, kind)
    remove_backup(outcome['path'])
    assert os.listdir(str(tmp_path / 'dest')) == []
    remove_backup_without_sums = tmp_path / 'dest' / 'old.tar.zst'
    remove_backup_without_sums.write_bytes(b'x')   # a backup made before there were checksum files
    remove_backup(str(remove_backup_without_sums))
    assert os.listdir(str(tmp_path / 'dest')) == []


def test_a_checksum_file_left_half_written_is_a_stale_partial():
    pattern = partial_pattern('unit1', UUID)
    assert pattern.match('.unit1-6f1c5c33-20261127T020304.517Z.tar.zst.sha256.partial-0a1b2c3d')
    assert pattern.match('.unit1-6f1c5c33-20261127T020304.517Z.sha256.partial-0a1b2c3d')
    assert not pattern.match('unit1-6f1c5c33-20261127T020304.517Z.tar.zst.sha256')


def test_sums_lines_escape_as_sha256sum_does():
    assert sums_line('a' * 64, 'b/c d') == '%s  b/c d\n' % ('a' * 64)
    assert sums_line('a' * 64, 'x\\y\nz') == '\\%s  x\\\\y\\nz\n' % ('a' * 64)


def test_plain_digest_hashes_holes_as_zeros():
    plain = PlainDigest()
    plain.update(3, b'abc')
    plain.update(10 << 20, b'z')
    assert plain.hexdigest((12 << 20) + 5) == hashlib.sha256(
        bytes(3) + b'abc' + bytes((10 << 20) - 6) + b'z' + bytes((2 << 20) + 4)).hexdigest()


# ---------------------------------------------------------------- manifests that call the digest sha256

def test_the_manifest_names_the_digest_for_what_it_is(tmp_path):
    _disk, outcome = write(tmp_path, 'directory')
    with open(os.path.join(outcome['path'], 'manifest.json')) as handle:
        raw = json.load(handle)
    with open(os.path.join(outcome['path'], 'checksums.json')) as handle:
        sums = json.load(handle)
    assert [entry['piecewise_sha256'] for entry in raw['files'] if entry['role'] in ('domain', 'snapshot')]
    assert not [entry for entry in raw['files'] if 'sha256' in entry]
    assert set(sums) == {'format', 'piecewise_sha256'}
    assert sums['piecewise_sha256']['disks/00-unit1.raw'] == outcome['files'][-1]['sha256']


def old_keys(path, tamper=None):
    """Rewrite the directory backup at ``path`` as written before issue 14: the digest under ``sha256``."""
    with open(os.path.join(path, 'manifest.json')) as handle:
        raw = json.load(handle)
    for entry in raw['files']:
        if 'piecewise_sha256' in entry:
            entry['sha256'] = entry.pop('piecewise_sha256')
            if tamper == entry['name']:
                entry['sha256'] = '0' * 64
    data = json.dumps(raw, indent=1).encode() + b'\n'
    with open(os.path.join(path, 'manifest.json'), 'wb') as handle:
        handle.write(data)
    with open(os.path.join(path, 'checksums.json')) as handle:
        sums = json.load(handle)
    digests = sums.pop('piecewise_sha256')
    digests['manifest.json'] = digest_bytes(data)
    with open(os.path.join(path, 'checksums.json'), 'w') as handle:
        json.dump(dict(sums, sha256=digests), handle)
    return raw


def test_an_old_manifest_still_verifies_and_restores(tmp_path):
    _disk, outcome = write(tmp_path, 'directory')
    raw = old_keys(outcome['path'])
    assert Manifest.from_bytes(json.dumps(raw).encode()).files[0].piecewise_sha256 == raw['files'][0]['sha256']
    summary = Reading(outcome['path']).run().summary()
    assert [entry['sha256'] for entry in summary['files']] == [entry['sha256'] for entry in outcome['files']]
    result = restore_backup(read_request(dict(uri='test:///default', state='restored', src=outcome['path'],
                                              domain=None, dest=None, keep=None, disk_dir=None, force=True,
                                              start=False)), check_mode=True)
    assert result['restored']['files'][0]['sha256'] == outcome['files'][-1]['sha256']


def test_an_old_manifests_digest_is_still_checked(tmp_path):
    """The old key is read, not skipped: a wrong XML digest under it is damage, found before the checksum list."""
    _disk, outcome = write(tmp_path, 'directory')
    old_keys(outcome['path'], tamper='domain.xml')
    with pytest.raises(BackupDamaged, match=re.escape('the SHA-256 of domain.xml does not match the manifest')):
        Reading(outcome['path']).run()


def test_two_different_digests_in_one_entry_are_damage():
    data = manifest_data()
    data['files'][0]['piecewise_sha256'] = 'a' * 64
    data['files'][0]['sha256'] = 'b' * 64
    with pytest.raises(BackupDamaged, match='two different digests'):
        Manifest.from_bytes(json.dumps(data).encode())


# ---------------------------------------------------------------- a full disk while zstd's output is pumped

@pytest.mark.skipif(not HAVE_ZSTD, reason='no zstd')
def test_a_full_disk_under_the_zstd_pump_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    """zstd's output goes through this process (to be hashed) on its way to the archive: a write there that
    finds no space must end the backup with the same one line as before, and leave no file behind."""
    import errno
    from ansible_collections.kvm.snapshots.plugins.module_utils._backup import archive_writer
    from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import OperationFailed

    real = archive_writer.write_all

    def filling(fd, data):
        if '.partial-' in os.readlink('/proc/self/fd/%d' % fd):   # the archive file, not zstd's stdin
            raise OSError(errno.ENOSPC, 'No space left on device')
        return real(fd, data)
    monkeypatch.setattr(archive_writer, 'write_all', filling)
    with pytest.raises(OperationFailed) as err:
        write(tmp_path, 'zstd')
    assert str(err.value).startswith('no space left in %s while writing the backup of unit1' % (tmp_path / 'dest'))
    assert '\n' not in str(err.value) and '(the partial backup was removed)' in str(err.value)
    assert os.listdir(str(tmp_path / 'dest')) == []
