# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Send a signal to the module that is writing a backup, in the middle of the copy.

    signal_writer.py DIR SIGNAL DOMAIN [--timeout SECONDS]

Waits until a partial backup (a name containing ``.partial-``) appears in DIR,
notes the domain's state then (``virsh domstate``: what the guest is while it is
copied), finds the Python process that holds the partial file open (the module;
zstd holds it too, but is not Python) and sends it SIGNAL (TERM, HUP, ...) by
its pid. Prints one JSON line: ``{"done", "state_during_copy", "pid", "partial"}``;
exits 3 when no partial backup appeared in time, so a signal that was never sent
fails the test.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time


def holders(path):
    pids = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as handle:
                argv0 = handle.read().split(b'\0')[0]
            if b'python' not in os.path.basename(argv0):
                continue
            fd_dir = '/proc/%s/fd' % pid
            for fd in os.listdir(fd_dir):
                try:
                    if os.readlink(os.path.join(fd_dir, fd)) == path:
                        pids.append(int(pid))
                        break
                except OSError:
                    continue
        except OSError:
            continue
    return pids


def main():
    directory, signame, domain = sys.argv[1:4]
    timeout = float(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == '--timeout' else 120.0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            names = [n for n in os.listdir(directory) if '.partial-' in n]
        except FileNotFoundError:
            names = []
        if names:
            path = os.path.join(directory, names[0])
            state = subprocess.run(['virsh', 'domstate', domain], capture_output=True, text=True,
                                   check=False).stdout.strip()
            pids = holders(path)
            if pids:
                for pid in pids:
                    os.kill(pid, getattr(signal, 'SIG' + signame))
                print(json.dumps(dict(done=True, state_during_copy=state, pid=pids, partial=path)))
                return 0
        time.sleep(0.02)
    print(json.dumps(dict(done=False, why='no partial backup with a Python writer appeared in %s' % directory)))
    return 3


if __name__ == '__main__':
    sys.exit(main())
