# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The progress file vm_backup's module rewrites for its action plugin."""

from __future__ import annotations

import json
import os

import pytest

from ansible_collections.kvm.snapshots.plugins.module_utils._backup import progress
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput


class Clock:
    def __init__(self):
        self.now = 50.0

    def __call__(self):
        return self.now


def read(path):
    with open(path) as handle:
        return json.load(handle)


def test_phase_is_written_at_once_and_bytes_once_a_second(tmp_path):
    path = str(tmp_path / 'p.json')
    clock = Clock()
    reporter = progress.Progress(path, 'present', 'web-1', clock=clock)
    reporter.phase('copying', total=100 << 20, file='/b/.x.partial-1')
    assert read(path)['phase'] == 'copying' and read(path)['done'] == 0
    reporter.advance(1 << 20)
    clock.now += 0.5
    reporter.advance(1 << 20)
    assert read(path)['done'] == 0          # not yet a second: nothing written
    clock.now += 0.6
    reporter.advance(1 << 20)
    info = read(path)
    assert info['done'] == 3 << 20 and info['total'] == 100 << 20
    assert info['phase_seconds'] == pytest.approx(1.1)
    assert info['pid'] == os.getpid() and info['domain'] == 'web-1' and info['file'] == '/b/.x.partial-1'
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert sorted(os.listdir(str(tmp_path))) == ['p.json']   # the temporary file was renamed over it


def test_done_never_passes_total(tmp_path):
    path = str(tmp_path / 'p.json')
    reporter = progress.Progress(path)
    reporter.phase('copying', total=10)
    reporter.info['done'] = 64 << 10
    reporter.write()
    assert read(path)['done'] == 10


def test_reporting_sets_the_current_reporter_and_removes_the_file(tmp_path):
    path = str(tmp_path / 'p.json')
    with progress.reporting(path, 'verified') as reporter:
        assert progress.current() is reporter
        assert read(path)['state'] == 'verified'
        progress.phase('verifying', total=5)
        progress.advance(5)
    assert not os.path.exists(path)
    assert progress.current().path is None     # the inert one again


def test_reporting_removes_the_file_on_failure(tmp_path):
    path = str(tmp_path / 'p.json')
    with pytest.raises(KeyboardInterrupt):
        with progress.reporting(path):
            raise KeyboardInterrupt()
    assert not os.path.exists(path)


def test_no_path_writes_nothing(tmp_path):
    with progress.reporting(None):
        progress.phase('copying', total=1)
        progress.advance(1)
    assert os.listdir(str(tmp_path)) == []


def test_an_unwritable_place_does_not_fail_the_work(tmp_path):
    path = str(tmp_path / 'missing' / 'p.json')
    with progress.reporting(path) as reporter:
        progress.phase('copying', total=1)
        assert reporter.path is None            # given up quietly


def test_refusals():
    with pytest.raises(InvalidInput, match='progress_file must be an absolute path'):
        with progress.reporting('relative.json'):
            pass
    with pytest.raises(InvalidInput, match=r'progress_interval must be 0 \(no progress lines\)'):
        progress.check_interval(-1)
    progress.check_interval(0)
    progress.check_interval(None)
