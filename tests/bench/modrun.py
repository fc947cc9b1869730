# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Run one module as a process, as Ansible does on the host, and record its peak memory.

    python modrun.py ansible_collections.kvm.snapshots.plugins.modules.NAME ARGS.json

ARGS.json holds {"ANSIBLE_MODULE_ARGS": {...}}. With KVMSNAP_BENCH_RUSAGE set, the
peak RSS of this process (the module's Python, VmHWM) is written there as JSON
when the module exits.
"""

import atexit
import json
import os
import resource
import runpy
import sys


def _hwm_kib():
    """VmHWM: the peak RSS of this process's own memory since its exec.

    Not ru_maxrss: Linux carries the parent's RSS at fork over into the child's
    ru_maxrss across exec, so a big harness would show up as a big module.
    """
    with open('/proc/self/status') as status:
        for line in status:
            if line.startswith('VmHWM:'):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _report():
    path = os.environ.get('KVMSNAP_BENCH_RUSAGE')
    if not path:
        return
    with open(path, 'w') as out:
        json.dump(dict(self_kib=_hwm_kib(),
                       children_kib=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss), out)


def main():
    module, args = sys.argv[1], sys.argv[2]
    atexit.register(_report)
    sys.argv = [module, args]
    runpy.run_module(module, run_name='__main__', alter_sys=True)


if __name__ == '__main__':
    main()
