# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/request.py: vm_backup's options checked and derived once; the default zstd level is the one the
module documentation and the backup role state."""

from __future__ import annotations

import os
import re

import pytest

pytest.importorskip('lxml')
yaml = pytest.importorskip('yaml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.request import (  # noqa: E402
    DEFAULT_LEVEL,
    backup_request,
    read_request,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.modules import vm_backup  # noqa: E402

COLLECTION = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(vm_backup.__file__))))


def present(**changes):
    """vm_backup's parameters for state=present as AnsibleModule hands them over (defaults filled in)."""
    params = dict(uri='qemu:///system', state='present', domain='web1', dest='/srv/backups', format='archive',
                  compression='zstd', compression_level=None, threads=0, if_running='live', shutdown_timeout=300,
                  quiesce=False, keep=None, src=None, disk_dir=None, force=False, start=False)
    params.update(changes)
    return params


@pytest.mark.parametrize('keep', [-1, 0])
def test_keep_below_one_is_one_line_with_the_way_out(keep):
    params = dict(keep=keep, threads=0, compression_level=None, format='archive', compression='zstd',
                  shutdown_timeout=300, dest='/srv/backups')
    with pytest.raises(InvalidInput) as exc:
        backup_request(params)
    assert str(exc.value) == ('keep must be 1 or more (it counts the backup just made), got %d: omit keep to keep '
                              'every backup' % keep)


@pytest.mark.parametrize('changes, writer, compression, level, suffix', [
    (dict(), 'zstd', 'zstd', DEFAULT_LEVEL, '.tar.zst'),
    (dict(compression_level=19), 'zstd', 'zstd', 19, '.tar.zst'),
    (dict(compression='none'), 'none', 'none', None, '.tar'),
    (dict(format='directory'), 'directory', None, None, ''),
], ids=['zstd-default', 'zstd-19', 'none', 'directory'])
def test_the_level_is_derived_only_for_zstd(changes, writer, compression, level, suffix):
    request = backup_request(present(**changes))
    assert (request.writer, request.compression, request.level, request.suffix) == (writer, compression, level, suffix)
    assert request.options() == dict(format=changes.get('format', 'archive'), compression=compression,
                                     compression_level=level, if_running='live', quiesce=False)


def test_the_default_level_is_the_documented_one():
    docs = yaml.safe_load(vm_backup.DOCUMENTATION)
    text = ' '.join(docs['options']['compression_level']['description'])
    assert [int(n) for n in re.findall(r'When not set, (\d+)\.', text)] == [DEFAULT_LEVEL]
    with open(os.path.join(COLLECTION, 'roles', 'backup', 'defaults', 'main.yml')) as handle:
        assert yaml.safe_load(handle)['backup_compression_level'] == DEFAULT_LEVEL
    with open(os.path.join(COLLECTION, 'roles', 'backup', 'meta', 'argument_specs.yml')) as handle:
        spec = yaml.safe_load(handle)['argument_specs']['main']['options']['backup_compression_level']
    assert spec['default'] == DEFAULT_LEVEL


def test_restore_needs_an_existing_disk_dir(tmp_path):
    params = dict(uri='qemu:///system', state='restored', src='/b.tar.zst', domain=None, dest=None, keep=None,
                  disk_dir=str(tmp_path / 'missing'), force=False, start=False)
    with pytest.raises(InvalidInput, match='does not exist: create it first'):
        read_request(params)
    request = read_request(dict(params, disk_dir=str(tmp_path)))
    assert request.disk_root == os.path.realpath(str(tmp_path))


@pytest.mark.parametrize('if_running', ['fail', 'shutdown', 'suspend'])
def test_quiesce_needs_a_live_backup(if_running):
    with pytest.raises(InvalidInput, match=r"^quiesce only applies to if_running: live, not %s: drop quiesce, or set "
                                           r"if_running: live$" % if_running):
        backup_request(present(quiesce=True, if_running=if_running))
    assert backup_request(present(quiesce=True)).quiesce is True


def test_quiesce_is_refused_when_reading_a_backup():
    with pytest.raises(InvalidInput, match='^quiesce only applies to state present$'):
        read_request(dict(present(state='verified', dest=None, src='/srv/backups/b.tar.zst'), quiesce=True))


REMOTE_URIS = ['qemu+ssh://root@hv1/system', 'qemu+tcp://hv1/system', 'qemu+tls://hv1.example.com/system',
               'qemu://hv1/system', 'qemu+ssh://root@localhost:2222/system', 'qemu+libssh2://10.0.0.5/system',
               'qemu+ext:///system?command=/opt/tunnel', 'hv1-alias', '']


@pytest.mark.parametrize('uri', REMOTE_URIS)
def test_a_uri_that_may_name_another_host_is_refused_for_present(uri):
    with pytest.raises(InvalidInput) as exc:
        backup_request(present(uri=uri))
    text = str(exc.value)
    assert text.startswith('vm_backup state=present reads and writes the disk images on the machine the module '
                           'runs on, so uri must name the hypervisor of that machine')
    assert 'delegate_to' in text and 'uri: qemu:///system' in text and '\n' not in text


@pytest.mark.parametrize('uri', REMOTE_URIS)
def test_a_uri_that_may_name_another_host_is_refused_for_restored_not_verified(uri):
    params = dict(uri=uri, state='restored', src='/b.tar.zst', domain=None, dest=None, keep=None,
                  disk_dir=None, force=False, start=False)
    with pytest.raises(InvalidInput, match='^vm_backup state=restored reads and writes the disk images .* '
                                           'delegate_to: the hypervisor'):
        read_request(params)
    # verified reads only the backup file and opens no connection: any uri does
    assert read_request(dict(params, state='verified')).uri == uri


@pytest.mark.parametrize('uri', ['qemu:///system', 'qemu:///session', 'test:///default', 'qemu+unix:///system',
                                 'qemu+ssh:///system', 'qemu+tcp://localhost/system', 'qemu+ssh://root@127.0.0.1/system',
                                 'qemu+tls://[::1]/system'])
def test_a_local_uri_is_accepted(uri):
    assert backup_request(present(uri=uri)).uri == uri
    params = dict(uri=uri, state='restored', src='/b.tar.zst', domain=None, dest=None, keep=None,
                  disk_dir=None, force=False, start=False)
    assert read_request(params).uri == uri
