# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Test-only pause points, inert unless ``KVMSNAP_TEST_PAUSE`` names one: windows too short to hit otherwise."""

from __future__ import annotations

import os
import time

PAUSE_ENV = 'KVMSNAP_TEST_PAUSE'
MAX_PAUSE = 600


def pause_point(point):
    """Stop at ``point`` when ``KVMSNAP_TEST_PAUSE=<point>:<flag file>`` is set; inert otherwise.

    Writes this process's pid into the flag file and sleeps until the file is removed
    (10 minutes at most), so an integration test can act inside the window (write as
    the guest, SIGKILL the module) and then let it go on. Points: ``restore-commit``
    (domain undefined, first file set aside), ``backup-held`` (the domain held for the
    copy: overlays in place, paused or shut down; files about to be copied), ``backup-writing``
    (the backup's small files written, its disks next; with a repository, restic is reading),
    ``progress-half`` (half the bytes of a phase with a total read: copying, verifying,
    restoring; the progress file written just before).
    """
    spec = os.environ.get(PAUSE_ENV, '')
    if not spec.startswith(point + ':'):
        return
    flag = spec.split(':', 1)[1]
    with open(flag, 'w') as handle:
        handle.write('%d\n' % os.getpid())
    deadline = time.monotonic() + MAX_PAUSE
    while time.monotonic() < deadline and os.path.exists(flag):
        time.sleep(0.1)
