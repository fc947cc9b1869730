# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/places.py (issue 16): a dest that cannot be written is refused as such before anything happens,
and a refused probe does not claim that nothing was written."""

from __future__ import annotations

import os

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup import places  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.places import (  # noqa: E402
    check_writable,
    probe_writable,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (  # noqa: E402
    InvalidInput,
    OperationFailed,
)


def test_read_only_dest_is_refused_as_such(tmp_path, monkeypatch):
    real = os.statvfs

    class ReadOnly:
        def __init__(self, path):
            self.info = real(path)
            self.f_flag = self.info.f_flag | os.ST_RDONLY

        def __getattr__(self, name):
            return getattr(self.info, name)

    # A read-only mount needs privileges a unit test does not have: only this call is faked.
    monkeypatch.setattr(places.os, 'statvfs', ReadOnly)
    with pytest.raises(InvalidInput) as exc:
        check_writable(str(tmp_path / 'a' / 'b'))
    assert str(exc.value) == ('cannot write a backup into %s (its nearest existing parent is %s): Read-only file '
                              'system: remount it read-write, or choose another dest (nothing was paused or written)'
                              % (tmp_path / 'a' / 'b', tmp_path))


def test_unwritable_dest_is_refused_not_called_full(tmp_path, monkeypatch):
    monkeypatch.setattr(places.os, 'access', lambda path, mode: False)
    with pytest.raises(InvalidInput, match=r'^cannot write a backup into .*: Permission denied for uid \d+: run as '
                                           r'root \(become: true\), fix its permissions, or choose another dest'):
        check_writable(str(tmp_path))


def test_writable_dest_passes_and_the_probe_leaves_nothing(tmp_path):
    check_writable(str(tmp_path))
    probe_writable(str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_a_refused_probe_does_not_claim_nothing_was_written(tmp_path, monkeypatch):
    """The probe runs after dest was created: "nothing was written" would not be true."""
    def refused(**_kwargs):
        raise PermissionError(13, 'Permission denied')

    monkeypatch.setattr(places.tempfile, 'mkstemp', refused)
    with pytest.raises(OperationFailed) as caught:
        probe_writable(str(tmp_path))
    assert str(caught.value).endswith('(nothing was paused and no backup was written)')
