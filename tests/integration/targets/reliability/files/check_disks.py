# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""After a fault: every qcow2 image is consistent and holds the byte patterns it should.

    check_disks.py SPEC_JSON

SPEC_JSON is a list of ``{"path": ..., "pattern": "0xa3", "snapshots": {"s1": "0xa1"}}``:
``qemu-img check`` must be clean, the first MiB must read back as ``pattern`` now and,
for each internal snapshot, as its pattern in that snapshot (read from a copy of the
snapshot made with ``qemu-img convert -l``). ``"wrong": true`` in an entry turns it
into a control: the pattern must NOT read back, which shows the reads can fail.

Prints one JSON line per image; exits 1 when anything is wrong.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile


def run(cmd):
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


def reads_back(path, pattern):
    code, out = run(['qemu-io', '-r', '-f', 'qcow2', '-c', 'read -P %s 0 1M' % pattern, path])
    return code == 0 and 'read 1048576/1048576 bytes' in out and 'fail' not in out.lower(), out


def check(spec):
    path = spec['path']
    report = dict(path=path, problems=[])
    code, out = run(['qemu-img', 'check', '-f', 'qcow2', path])
    if code != 0 or 'No errors were found' not in out:
        report['problems'].append('qemu-img check: %s' % ' '.join(out.split()))
    wrong = spec.get('wrong', False)
    good, out = reads_back(path, spec['pattern'])
    if good == wrong:
        outcome = 'read back' if wrong else 'did not read back'
        report['problems'].append('pattern %s %s: %s' % (spec['pattern'], outcome, ' '.join(out.split())))
    for name, pattern in sorted(spec.get('snapshots', {}).items()):
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, 'snapshot.qcow2')
            code, out = run(['qemu-img', 'convert', '-f', 'qcow2', '-O', 'qcow2', '-l', 'snapshot.name=%s' % name,
                             path, copy])
            if code != 0:
                report['problems'].append('snapshot %s cannot be read: %s' % (name, ' '.join(out.split())))
                continue
            good, out = reads_back(copy, pattern)
            if good == wrong:
                outcome = 'read back' if wrong else 'did not read back'
                report['problems'].append('snapshot %s: pattern %s %s' % (name, pattern, outcome))
    return report


def main():
    specs = json.loads(sys.argv[1])
    failed = False
    for spec in specs:
        report = check(spec)
        failed = failed or bool(report['problems'])
        print(json.dumps(report))
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
