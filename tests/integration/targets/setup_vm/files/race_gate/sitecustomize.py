# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Test hook for the concurrency tests: a start line inside libvirt's snapshot creation.

Python imports this file at start-up when its directory is on PYTHONPATH. It does
nothing unless KVMSNAP_RACE_GATE names a directory. Then the first call of
``virDomain.snapshotCreateXML`` in this process writes ``arrived-<pid>`` there and
waits until KVMSNAP_RACE_COUNT (default 2) processes have arrived (at most 60 s),
then calls libvirt for real and writes ``done-<pid>``: JSON with the times of
arrival, release and return (time.time()), and ``error`` (libvirt's message, or
null when it created the snapshot).

So each run has read the snapshot list and decided to create before any of them
creates: the runs overlap with certainty, and the records show it.
"""

from __future__ import annotations

import json
import os
import time

GATE = os.environ.get('KVMSNAP_RACE_GATE')


def _record(name, data):
    path = os.path.join(GATE, '%s-%d' % (name, os.getpid()))
    with open(path + '.tmp', 'w') as handle:
        json.dump(data, handle)
    os.rename(path + '.tmp', path)


def _install():
    import libvirt  # pylint: disable=import-outside-toplevel

    real = libvirt.virDomain.snapshotCreateXML
    count = int(os.environ.get('KVMSNAP_RACE_COUNT', '2'))
    state = dict(waited=False)

    def gated(self, xml, flags=0):
        if state['waited']:
            return real(self, xml, flags)
        state['waited'] = True
        arrived = time.time()
        _record('arrived', dict(arrived=arrived))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len([n for n in os.listdir(GATE) if n.startswith('arrived-')]) >= count:
                break
            time.sleep(0.005)
        record = dict(arrived=arrived, released=time.time(), timed_out=time.monotonic() >= deadline, error=None)
        try:
            return real(self, xml, flags)
        except libvirt.libvirtError as exc:
            record['error'] = str(exc)
            raise
        finally:
            record['returned'] = time.time()
            _record('done', record)

    libvirt.virDomain.snapshotCreateXML = gated


if GATE:
    try:
        _install()
    except ImportError:
        pass  # not a process that talks to libvirt
