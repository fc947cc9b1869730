# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/locks.py (issue 16): one backup of a domain at a time on a host, in a lock directory no other user can write."""

from __future__ import annotations

import os
import threading
import time

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup import locks  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.locks import DomainLock  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput  # noqa: E402

UUID_A = '6f1c5c33-8d3e-4a53-b0a4-63e3c4c0e0a1'
UUID_B = '0d9e2a71-1b2c-4d5e-8f90-a1b2c3d4e5f6'


def test_a_second_backup_of_the_domain_waits_for_the_first(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, 'LOCK_DIR', str(tmp_path))
    order = []
    with DomainLock(UUID_A) as first:
        assert first.path == str(tmp_path / ('kvm.snapshots-backup-%s.lock' % UUID_A))

        def second():
            with DomainLock(UUID_A) as lock:
                order.append(('second', lock.waited))

        thread = threading.Thread(target=second)
        thread.start()
        with DomainLock(UUID_B) as other:  # another domain does not wait
            assert other.waited == 0
        time.sleep(0.3)
        order.append(('first done', None))
    thread.join(10)
    assert order[0] == ('first done', None)
    assert order[1][0] == 'second' and order[1][1] >= 0.2
    assert os.listdir(tmp_path) == []  # each holder removes its lock file


def test_waiters_after_a_removed_lock_file_still_take_turns(tmp_path, monkeypatch):
    monkeypatch.setattr(locks, 'LOCK_DIR', str(tmp_path))
    inside = []
    overlaps = []
    lock = threading.Lock()

    def backup():
        for _round in range(20):
            with DomainLock(UUID_A):
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


def test_the_backup_lock_lives_in_a_directory_no_other_user_can_write(tmp_path, monkeypatch):
    """In world-writable /run/lock any local user could hold the lock and make root's backup wait forever."""
    directory = tmp_path / 'locks'
    monkeypatch.setattr(locks, 'LOCK_DIR', str(directory))
    with DomainLock('2d0c5b2a-0c1e-4f8e-9d6b-1a2b3c4d5e6f') as lock:
        assert os.path.dirname(lock.path) == str(directory)
    assert oct(os.stat(directory).st_mode & 0o7777) == oct(0o700)
    os.chmod(directory, 0o1777)     # made by someone who wants others in
    with pytest.raises(InvalidInput, match='^the lock directory %s is not a directory owned by' % directory):
        DomainLock('2d0c5b2a-0c1e-4f8e-9d6b-1a2b3c4d5e6f')
    os.rmdir(directory)
    os.symlink(str(tmp_path), str(directory))
    with pytest.raises(InvalidInput, match='remove it, then run again'):
        DomainLock('2d0c5b2a-0c1e-4f8e-9d6b-1a2b3c4d5e6f')
