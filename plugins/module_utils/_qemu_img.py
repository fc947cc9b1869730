# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The qemu-img calls of the collection: reading an image's chain, pointing an image at a moved backing file.

Private to kvm.snapshots: no stable API for other collections.
"""

from __future__ import annotations

import json
import subprocess

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import OperationFailed, one_line

NOT_FOUND = 'qemu-img not found: install qemu-utils (Debian/Ubuntu) or qemu-img (RHEL/Fedora)'


def _qemu_img(args):
    try:
        return subprocess.run(['qemu-img'] + args, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        raise OperationFailed(NOT_FOUND) from None


def qemu_img_info(path, backing_chain=False):
    """``qemu-img info -U --output=json`` of an image (``-U``: works while the domain runs)."""
    proc = _qemu_img(['info', '-U', '--output=json'] + (['--backing-chain'] if backing_chain else []) + [path])
    if proc.returncode != 0:
        raise OperationFailed('qemu-img info %s failed: %s' % (path, proc.stderr.strip() or proc.stdout.strip()))
    return json.loads(proc.stdout)


def rebase_unsafe(path, backing, backing_format, shown=None):
    """Point the qcow2 image ``path`` at ``backing`` without touching data (``qemu-img rebase -u``)."""
    proc = _qemu_img(['rebase', '-u', '-f', 'qcow2', '-F', backing_format, '-b', backing, path])
    if proc.returncode != 0:
        raise OperationFailed('qemu-img rebase of %s failed: %s' % (shown or path, one_line(proc.stderr)))


def commit_image(path):
    """Write the qcow2 overlay ``path`` into its backing file (``qemu-img commit``)."""
    proc = _qemu_img(['commit', '-q', '-f', 'qcow2', path])
    if proc.returncode != 0:
        raise OperationFailed('qemu-img commit: %s' % one_line(proc.stderr))
