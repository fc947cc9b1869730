# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Watch a backup directory while several backups run, from outside the module.

    watch_dest.py DIR COUNT [--timeout SECONDS]

Polls DIR every 10 ms until COUNT complete-looking entries (names not starting
with a dot) are there. Prints one JSON line: ``max_partials`` (most partial
backups seen at one time), ``first_complete`` (wall-clock time the first complete
backup appeared), ``entries``. Exits 3 on timeout.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main():
    directory, count = sys.argv[1], int(sys.argv[2])
    timeout = float(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == '--timeout' else 240.0
    deadline = time.monotonic() + timeout
    max_partials = 0
    first_complete = None
    complete = []
    while time.monotonic() < deadline:
        try:
            names = os.listdir(directory)
        except FileNotFoundError:
            names = []
        # a backup's sha256sum file (<backup>.sha256, written under a partial name too) is not a backup
        names = [n for n in names if '.sha256' not in n]
        max_partials = max(max_partials, sum(1 for n in names if '.partial-' in n))
        complete = sorted(n for n in names if not n.startswith('.'))
        if complete and first_complete is None:
            first_complete = time.time()
        if len(complete) >= count:
            print(json.dumps(dict(done=True, max_partials=max_partials, first_complete=first_complete,
                                  entries=complete)))
            return 0
        time.sleep(0.01)
    print(json.dumps(dict(done=False, max_partials=max_partials, entries=complete)))
    return 3


if __name__ == '__main__':
    sys.exit(main())
