# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_qemu_img.py on real images: an overlay's chain read, and the overlay pointed at its moved backing file
(what a restore with disk_dir does), as qemu-img itself then reports it."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import OperationFailed  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._qemu_img import (  # noqa: E402
    commit_image,
    qemu_img_info,
    rebase_unsafe,
)


def backing_of(path):
    """The backing reference written in ``path``, read by qemu-img directly (not the module's helper)."""
    out = subprocess.run(['qemu-img', 'info', '-U', '--output=json', path], capture_output=True, check=True).stdout
    info = json.loads(out)
    return info.get('backing-filename'), info.get('backing-filename-format')


def test_the_chain_is_read_and_the_overlay_follows_its_moved_backing_file(tmp_path):
    base, top = tmp_path / 'base.raw', tmp_path / 'top.qcow2'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'raw', str(base), '1M'], check=True)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', str(base), '-F', 'raw', str(top)], check=True)
    chain = qemu_img_info(str(top), backing_chain=True)
    assert [(i['filename'], i['format'], i.get('backing-filename')) for i in chain] == [
        (str(top), 'qcow2', str(base)), (str(base), 'raw', None)]
    assert qemu_img_info(str(top))['backing-filename'] == str(base)     # one image without backing_chain
    moved = tmp_path / 'elsewhere' / 'base.raw'
    moved.parent.mkdir()
    os.rename(str(base), str(moved))
    rebase_unsafe(str(top), str(moved), 'raw')
    assert backing_of(str(top)) == (str(moved), 'raw')


def test_qemu_img_failures_name_the_image_as_the_user_knows_it(tmp_path):
    missing = str(tmp_path / '.top.qcow2.kvmsnap-restore-ab12')
    with pytest.raises(OperationFailed, match="^qemu-img rebase of /var/lib/libvirt/images/top.qcow2 failed: .*"
                                              "No such file or directory"):
        rebase_unsafe(missing, '/x/base.raw', 'raw', shown='/var/lib/libvirt/images/top.qcow2')
    with pytest.raises(OperationFailed, match='^qemu-img info %s failed: ' % missing):
        qemu_img_info(missing)


def test_commit_writes_the_overlay_into_its_backing_file_and_names_a_failure(tmp_path):
    base, top = tmp_path / 'base.qcow2', tmp_path / '.base.qcow2.kvmsnap-overlay'
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', str(base), '4M'], check=True)
    subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-b', str(base), '-F', 'qcow2', str(top)], check=True)
    subprocess.run(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0xee 1M 1M', str(top)], check=True, capture_output=True)
    commit_image(str(top))
    read = subprocess.run(['qemu-io', '-r', '-f', 'qcow2', '-c', 'read -P 0xee 1M 1M', str(base)], capture_output=True,
                          text=True, check=False)
    assert read.returncode == 0 and 'fail' not in read.stdout.lower()
    with pytest.raises(OperationFailed, match='^qemu-img commit: .*'):
        commit_image(str(tmp_path / 'missing.qcow2'))
