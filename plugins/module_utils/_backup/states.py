# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""vm_backup as a whole: derive the request from the module's parameters, then run the state's function."""

from __future__ import annotations

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import OperationFailed

from .create import make_backup
from .errors import os_error_text
from .progress import check_interval, reporting
from .request import backup_request, read_request
from .restore import restore_backup
from .verify import verify_backup

STATES = dict(
    present=(backup_request, make_backup, 'backing up', 'choose another dest'),
    verified=(read_request, verify_backup, 'verifying the backup', 'check src'),
    restored=(read_request, restore_backup, 'restoring (nothing was changed)', 'choose another disk_dir'),
)


def run(params, check_mode=False):
    """The whole of vm_backup for its module parameters."""
    derive, work, doing, way_out = STATES[params['state']]
    check_interval(params.get('progress_interval'))
    try:
        with reporting(params.get('progress_file'), params['state'], params.get('domain')):
            return work(derive(params), check_mode)
    except OSError as exc:
        raise OperationFailed(os_error_text(exc, doing, way_out=way_out)) from None
