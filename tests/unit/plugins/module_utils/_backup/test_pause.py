# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/pause.py: the test-only pause points do nothing unless named, and end when their flag file goes."""

from __future__ import annotations

import os
import threading
import time

from ansible_collections.kvm.snapshots.plugins.module_utils._backup import pause
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.pause import PAUSE_ENV, pause_point


def test_a_pause_point_is_inert_unless_named(monkeypatch, tmp_path):
    monkeypatch.delenv(PAUSE_ENV, raising=False)
    pause_point('restore-commit')
    monkeypatch.setenv(PAUSE_ENV, 'another-point:%s' % (tmp_path / 'flag'))
    pause_point('restore-commit')
    assert not (tmp_path / 'flag').exists()


def test_a_named_point_writes_the_pid_and_waits_until_the_flag_is_removed(monkeypatch, tmp_path):
    flag = tmp_path / 'flag'
    monkeypatch.setenv(PAUSE_ENV, 'backup-held:%s' % flag)
    seen = []

    def release():
        while not flag.exists():
            time.sleep(0.01)
        seen.append(flag.read_text())
        time.sleep(0.3)
        flag.unlink()

    thread = threading.Thread(target=release)
    thread.start()
    started = time.monotonic()
    pause_point('backup-held')
    thread.join()
    assert seen == ['%d\n' % os.getpid()]
    assert time.monotonic() - started >= 0.3


def test_a_pause_ends_by_itself_after_its_limit(monkeypatch, tmp_path):
    monkeypatch.setattr(pause, 'MAX_PAUSE', 0.2)
    monkeypatch.setenv(PAUSE_ENV, 'backup-held:%s' % (tmp_path / 'flag'))
    pause_point('backup-held')
    assert (tmp_path / 'flag').exists()
