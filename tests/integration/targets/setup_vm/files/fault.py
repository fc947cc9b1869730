# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Inject one fault at the right moment of a running module, for the reliability tests.

    fault.py kill  DIR MARK      SIGKILL the Python process that holds open the first
                                 file of DIR whose name contains MARK, once it appears
    fault.py fill  DIR MARK FS   once such a file appears, fill the file system of FS
                                 (a small tmpfs) to the last byte
    fault.py restart-libvirtd GLOB COUNT
                                 once COUNT files match GLOB, stop libvirtd (SIGTERM to
                                 the pid in /run/libvirtd.pid), start it again and wait
                                 until it answers

Each waits at most --timeout seconds (default 120) and prints one JSON line saying
what it did; it exits 3 when the moment never came, so a fault that did not happen
fails the test instead of passing it. Only processes it finds holding the watched
file are killed, each by its pid.
"""

from __future__ import annotations

import argparse
import errno
import glob
import json
import os
import signal
import subprocess
import sys
import time

PID_FILE = '/run/libvirtd.pid'


def wait_for(dir_path, mark, deadline):
    while time.monotonic() < deadline:
        try:
            names = os.listdir(dir_path)
        except FileNotFoundError:
            names = []
        for name in names:
            if mark in name:
                return os.path.join(dir_path, name)
        time.sleep(0.002)
    return None


def holders(path):
    """Pids of Python processes with ``path`` open."""
    pids = []
    for pid in os.listdir('/proc'):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open('/proc/%s/cmdline' % pid, 'rb') as handle:
                cmdline = handle.read().split(b'\0')
            if not any(b'python' in os.path.basename(part) for part in cmdline[:1]):
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


def do_kill(args, deadline):
    path = wait_for(args.dir, args.mark, deadline)
    if path is None:
        return 3, dict(done=False, why='no file with %r appeared in %s' % (args.mark, args.dir))
    while time.monotonic() < deadline:
        pids = holders(path)
        if pids:
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            return 0, dict(done=True, file=path, killed=pids)
        if not os.path.lexists(path):
            return 3, dict(done=False, why='%s went away before its writer was found' % path)
        time.sleep(0.001)
    return 3, dict(done=False, why='nothing held %s open' % path)


def do_fill(args, deadline):
    path = wait_for(args.dir, args.mark, deadline)
    if path is None:
        return 3, dict(done=False, why='no file with %r appeared in %s' % (args.mark, args.dir))
    filler = os.path.join(args.fs, 'filler')
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    filled = 0
    try:
        block = b'\xff' * (1 << 20)
        while True:
            try:
                filled += os.write(fd, block)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                if len(block) == 1:
                    break
                block = block[:len(block) // 2]
    finally:
        os.close(fd)
    info = os.statvfs(args.fs)
    return 0, dict(done=True, file=path, filled=filled, free_after=info.f_bavail * info.f_frsize)


def libvirtd_answers():
    return subprocess.run(['virsh', '-c', 'qemu:///system', 'version'], capture_output=True,
                          check=False).returncode == 0


def do_restart(args, deadline):
    while time.monotonic() < deadline and len(glob.glob(args.glob)) < args.count:
        time.sleep(0.002)
    seen = len(glob.glob(args.glob))
    if seen < args.count:
        return 3, dict(done=False, why='only %d files matched %s' % (seen, args.glob))
    with open(PID_FILE) as handle:
        pid = int(handle.read().strip())
    stopped_at = time.monotonic()
    os.kill(pid, signal.SIGTERM)
    while time.monotonic() < stopped_at + 30:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.02)
    else:
        os.kill(pid, signal.SIGKILL)
    down = time.monotonic() - stopped_at
    # The old daemon's pidfile lock can outlive its pid by a moment (a child it forked still
    # holds the descriptor): try again for a while before giving up.
    while subprocess.run(['libvirtd', '-d'], check=False).returncode != 0:
        if time.monotonic() > stopped_at + 30:
            raise SystemExit('libvirtd would not start again')
        time.sleep(0.5)
    while time.monotonic() < stopped_at + 60 and not libvirtd_answers():
        time.sleep(0.1)
    return 0, dict(done=True, old_pid=pid, matched_at_stop=seen, seconds_down=round(down, 2),
                   seconds_to_answer=round(time.monotonic() - stopped_at, 2), answers=libvirtd_answers())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--timeout', type=float, default=120)
    sub = parser.add_subparsers(dest='what', required=True)
    kill = sub.add_parser('kill')
    kill.add_argument('dir')
    kill.add_argument('mark')
    fill = sub.add_parser('fill')
    fill.add_argument('dir')
    fill.add_argument('mark')
    fill.add_argument('fs')
    restart = sub.add_parser('restart-libvirtd')
    restart.add_argument('glob')
    restart.add_argument('count', type=int)
    args = parser.parse_args()
    deadline = time.monotonic() + args.timeout
    actions = {'kill': do_kill, 'fill': do_fill, 'restart-libvirtd': do_restart}
    code, report = actions[args.what](args, deadline)
    print(json.dumps(report))
    sys.exit(code)


if __name__ == '__main__':
    main()
