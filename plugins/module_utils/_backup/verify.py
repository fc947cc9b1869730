# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""vm_backup state=verified: read the whole backup, check every byte, change nothing."""

from __future__ import annotations

import time

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput

from .reading import Reading
from .repository import backup_source


def check_domain(request, manifest):
    """Refuse a backup of another domain than the one the request names (by name or UUID)."""
    if request.domain and request.domain not in (manifest.domain_name, manifest.uuid):
        raise InvalidInput("backup %s holds domain '%s' (uuid %s), not '%s': check src or domain"
                           % (request.src, manifest.domain_name, manifest.uuid, request.domain))


def rate(size, duration):
    return int(size / duration) if duration > 0 else None


def verify_backup(request, check_mode=False):
    """vm_backup state=verified for a ReadRequest."""
    started = time.monotonic()
    reading = Reading(backup_source(request), phase='verifying').run()
    check_domain(request, reading.manifest)
    duration = time.monotonic() - started
    summary = reading.summary()
    summary.update(duration=round(duration, 3), throughput=rate(reading.data_size, duration))
    return dict(changed=False, verified=summary)
