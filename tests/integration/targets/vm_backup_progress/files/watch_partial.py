# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""watch_partial.py DIR: the sizes of the hidden partial backup in DIR, as ``ls -la`` would show them while it grows.

Waits (up to 120 s) for a ``.*.partial-*`` file in DIR, then samples its size every
0.2 s until it is gone; prints ``{"path": ..., "sizes": [...]}`` as JSON.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main():
    directory = sys.argv[1]
    deadline = time.monotonic() + 120
    path, sizes = None, []
    while time.monotonic() < deadline:
        if path is None:
            names = [n for n in (os.listdir(directory) if os.path.isdir(directory) else [])
                     if n.startswith('.') and '.partial-' in n]
            if names:
                path = os.path.join(directory, names[0])
        if path is not None:
            try:
                size = os.stat(path).st_size
            except FileNotFoundError:
                break
            if not sizes or sizes[-1] != size:
                sizes.append(size)
        time.sleep(0.2)
    print(json.dumps(dict(path=path, sizes=sizes)))


if __name__ == '__main__':
    main()
