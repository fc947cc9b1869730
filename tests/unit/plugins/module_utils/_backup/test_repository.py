# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/repository.py and restic.py against the real restic and a local repository: a backup written
through ``restic backup --stdin`` and read back through ``restic dump``, found by ID or as the latest, refused
for another domain; an upload cut short stores nothing; retention per domain; errors in one line, no secret.

The integration target vm_backup_repository proves the same with real domains, and with S3.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

pytest.importorskip('lxml')
pytestmark = pytest.mark.skipif(shutil.which('restic') is None, reason='restic is not installed (tests/setup.sh)')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.reading import Reading  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.repository import (  # noqa: E402
    Repository,
    backup_source,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.request import (  # noqa: E402
    RepositoryConfig,
    backup_request,
    read_request,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.restic import (  # noqa: E402
    RepositoryError,
    RepositoryMissing,
    Restic,
    location_text,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.write import write_backup  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    OTHER_UUID,
    SNAPSHOT_XML,
    UUID,
    WHEN,
    one_disk_contents,
    sparse_disk,
)

PASSWORD = 'unit-test-Pa55word'


def config(tmp_path, password=PASSWORD, init=True):
    return RepositoryConfig(location=str(tmp_path / 'repo'), password=password, init=init)


def params(tmp_path, **changes):
    base = dict(uri='qemu:///system', state='present', domain='unit1', dest=None, format='archive',
                compression='zstd', compression_level=None, threads=0, keep=None, if_running='fail',
                shutdown_timeout=300, repository=str(tmp_path / 'repo'), repository_password=PASSWORD)
    base.update(changes)
    return base


def restic_json(tmp_path, *args):
    env = dict(os.environ, RESTIC_REPOSITORY=str(tmp_path / 'repo'), RESTIC_PASSWORD=PASSWORD)
    return json.loads(subprocess.run(['restic'] + list(args) + ['--json'], env=env, check=True,
                                     capture_output=True).stdout)


def back_up(tmp_path, name='unit1', uuid=UUID, fail_after=None):
    """One backup of a domain with a sparse raw disk and snapshot s1 into the repository; the result."""
    disk = str(tmp_path / ('%s.raw' % name))
    if not os.path.exists(disk):
        sparse_disk(disk)
    contents = one_disk_contents(disk, name=name, uuid=uuid,
                                 snapshots=[('s1', SNAPSHOT_XML.format(name='s1', disk=disk))], current='s1')
    request = backup_request(params(tmp_path, domain=name))
    repository = Repository(request.repository)
    repository.ensure(True, False)
    upload = repository.upload('%s-backup' % name, name, uuid, len(contents.order))
    if fail_after is not None:
        real_open = upload.open

        def open_then_fail(mtime):
            sink = real_open(mtime)
            real_add = sink.add_file

            def add_file(*args):
                real_add(*args)
                raise OSError(5, 'Input/output error')
            sink.add_file = add_file
            return sink
        upload.open = open_then_fail
    return write_backup(contents, upload, WHEN, 'shutoff', request)


def test_a_backup_is_one_tagged_restic_snapshot_and_reads_back_whole(tmp_path):
    backup = back_up(tmp_path)
    snaps = restic_json(tmp_path, 'snapshots')
    assert [snap['short_id'] for snap in snaps] == [backup['id']]
    assert set(snaps[0]['tags']) == {'kvm.snapshots', 'domain:unit1', 'uuid:' + UUID, 'backup:unit1-backup', 'snapshots:1',
                                     'size:%d' % backup['size'], 'added:%d' % backup['added']}
    assert snaps[0]['paths'] == ['/unit1.tar']
    assert backup['path'] is None and backup['added'] > 0 and backup['size'] > 1 << 20
    request = read_request(dict(uri='qemu:///system', state='verified', src='latest', domain='unit1',
                                repository=str(tmp_path / 'repo'), repository_password=PASSWORD))
    reading = Reading(backup_source(request)).run()
    summary = reading.summary()
    assert summary['id'].startswith(backup['id']) and summary['path'] is None
    assert summary['snapshots'] == ['s1'] and summary['domain'] == 'unit1'
    assert [f['sha256'] for f in summary['files']] == [f['sha256'] for f in backup['files']]


def test_a_second_backup_of_the_same_data_adds_almost_nothing(tmp_path):
    first = back_up(tmp_path)
    second = back_up(tmp_path)
    assert second['added'] < first['added'] / 10


def test_an_upload_cut_short_stores_no_snapshot(tmp_path):
    back_up(tmp_path)
    with pytest.raises(Exception) as failure:
        back_up(tmp_path, fail_after=1)
    assert 'no backup was stored' in str(failure.value)
    assert len(restic_json(tmp_path, 'snapshots')) == 1


def test_latest_and_ids_are_found_and_another_domains_backup_is_refused(tmp_path):
    mine = back_up(tmp_path)
    other = back_up(tmp_path, name='unit2', uuid=OTHER_UUID)
    repository = Repository(config(tmp_path))
    assert repository.locate('latest', 'unit1').id.startswith(mine['id'])
    assert repository.locate('latest', OTHER_UUID).id.startswith(other['id'])
    assert repository.locate(mine['id'], None).id.startswith(mine['id'])
    with pytest.raises(InvalidInput, match=r"holds domain 'unit2' \(uuid %s\), not 'unit1': check src or domain"
                       % OTHER_UUID):
        repository.locate(other['id'], 'unit1')
    with pytest.raises(InvalidInput, match='has no snapshot 0000beef: give an ID'):
        repository.locate('0000beef', None)
    with pytest.raises(InvalidInput, match="holds no backup of domain 'nobody'"):
        repository.locate('latest', 'nobody')


def test_retention_is_per_domain_and_check_mode_removes_nothing(tmp_path):
    ids = [back_up(tmp_path)['id'] for _count in range(3)]
    other = back_up(tmp_path, name='unit2', uuid=OTHER_UUID)
    repository = Repository(config(tmp_path))
    planned = repository.forget(UUID, [('keep-last', 1)], check_mode=True)
    assert [snap[:8] for snap in planned] == ids[:2]
    assert len(restic_json(tmp_path, 'snapshots')) == 4
    removed = repository.forget(UUID, [('keep-last', 1)], check_mode=False)
    assert removed == planned
    assert sorted(snap['short_id'] for snap in restic_json(tmp_path, 'snapshots')) == sorted([ids[2], other['id']])


def test_missing_repository_and_wrong_password_are_one_line_without_the_secret(tmp_path):
    with pytest.raises(RepositoryMissing, match='set repository_init: true to create one'):
        Repository(config(tmp_path)).ensure(False, False)
    assert Repository(config(tmp_path)).ensure(True, True) is True   # check mode: would create
    assert not (tmp_path / 'repo').exists()
    back_up(tmp_path)
    wrong = 'wrong-' + PASSWORD
    with pytest.raises(RepositoryError) as failure:
        Repository(config(tmp_path, password=wrong)).snapshots()
    assert str(failure.value).startswith('wrong password for repository %s' % (tmp_path / 'repo'))
    assert wrong not in str(failure.value) and '\n' not in str(failure.value)


def test_restic_errors_name_the_repository_and_hide_secrets():
    restic = Restic('rest:https://user:Top-Secret@backup.example:8000/', password='hunter2-x',
                    env={'AWS_SECRET_ACCESS_KEY': 'AKIA-SECRET-KEY'})
    assert restic.location == 'rest:https://user:***@backup.example:8000/'
    text = ('Fatal: unable to save snapshot: hunter2-x AKIA-SECRET-KEY '
            'rest:https://user:Top-Secret@backup.example:8000/ said no\n')
    message = str(restic.error(text, 'storing the backup'))
    for secret in ('hunter2-x', 'AKIA-SECRET-KEY', 'Top-Secret'):
        assert secret not in message
    assert message.startswith('restic failed while storing the backup in repository rest:https://user:***@')
    locked = restic.error('Fatal: unable to create lock in backend: repository is already locked exclusively by '
                          'PID 42 on host1 by root (UID 0, GID 0)\nlock was created at ...', 'storing the backup')
    assert 'is locked by another restic run (unable to create lock in backend: repository is already locked ' \
           'exclusively by PID 42' in str(locked)
    assert 'run restic unlock' in str(locked)


def test_the_password_reaches_restic_only_through_its_environment(tmp_path, monkeypatch):
    monkeypatch.setenv('RESTIC_PASSWORD', 'inherited')
    restic = Restic(str(tmp_path / 'repo'), password_file='/etc/restic.pass', env={'RESTIC_CACHE_DIR': '/c'})
    assert restic.env['RESTIC_PASSWORD_FILE'] == '/etc/restic.pass' and 'RESTIC_PASSWORD' not in restic.env
    assert restic.env['RESTIC_REPOSITORY'] == str(tmp_path / 'repo') and restic.env['RESTIC_CACHE_DIR'] == '/c'
    assert location_text('s3:https://s3.example/bucket') == 's3:https://s3.example/bucket'


def test_a_stage_dies_with_the_module(tmp_path):
    """SIGKILL of the module must not leave restic reading a closed pipe as the end of the stream."""
    script = ('import sys, time; from ansible_collections.kvm.snapshots.plugins.module_utils._backup.stage import '
              'Stage; s = Stage(["sleep", "60"], "no sleep", tied=True); print(s.proc.pid, flush=True); time.sleep(60)')
    parent = subprocess.Popen([sys.executable, '-c', script], stdout=subprocess.PIPE,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(path for path in sys.path if path)))
    child = int(parent.stdout.readline())
    parent.kill()
    parent.wait()
    for _count in range(100):
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        with open('/proc/%d/stat' % child) as stat:
            if stat.read().split()[2] == 'Z':
                break
        __import__('time').sleep(0.05)
    else:
        pytest.fail('the stage outlived the module')


@pytest.mark.parametrize('changes, text', [
    (dict(repository_password=None), 'needs exactly one of repository_password and repository_password_file'),
    (dict(repository_password_file='/etc/x'), 'needs exactly one of repository_password'),
    (dict(dest='/srv/b'), 'dest and repository exclude each other'),
    (dict(format='directory'), 'format and compression_level do not apply to a repository'),
    (dict(compression_level=5), 'format and compression_level do not apply to a repository'),
    (dict(keep_daily=0), 'keep_daily must be 1 or more'),
    (dict(repository=None, repository_password=None, dest='/srv/b', keep_weekly=2),
     'keep_weekly only applies with repository: set repository, or drop it'),
    (dict(repository=None, dest='/srv/b', repository_init=True),
     'repository_password, repository_init only apply with repository: set repository, or drop them'),
    (dict(repository_password=None, repository_password_file='relative'), 'must be an absolute path'),
])
def test_repository_options_refused(tmp_path, changes, text):
    with pytest.raises(InvalidInput, match=text):
        backup_request(params(tmp_path, **changes))


def test_repository_retention_becomes_a_forget_policy(tmp_path):
    request = backup_request(params(tmp_path, keep=3, keep_daily=7, keep_monthly=12))
    assert request.retention == (('keep-last', 3), ('keep-daily', 7), ('keep-monthly', 12))
    assert request.format == 'repository' and request.dest is None
    assert PASSWORD not in repr(request)
