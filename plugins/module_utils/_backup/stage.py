# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A program as a pipe stage (zstd, restic): one process, its error text kept for a one-line message."""

from __future__ import annotations

import ctypes
import signal
import subprocess
import tempfile

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import OperationFailed, one_line

PR_SET_PDEATHSIG = 1


def die_with_parent():
    """In the child, before exec: the kernel kills it when the module dies (SIGKILL included).

    A stage reading our stdout must not take a vanished module's closed pipe for the
    end of the data: restic would store a cut stream as a snapshot.
    """
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Stage:
    """One process of ``argv``; its stderr goes to a temporary file, read back for the error text."""

    def __init__(self, argv, missing, env=None, tied=False, **pipes):
        self.errors = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(argv, stderr=self.errors, bufsize=0, close_fds=True, env=env,
                                         preexec_fn=die_with_parent if tied else None, **pipes)
        except FileNotFoundError:
            self.errors.close()
            raise OperationFailed(missing) from None

    def raw_text(self):
        self.errors.seek(0)
        return self.errors.read().decode('utf-8', 'replace')

    def text(self, timeout=None):
        """The complaint in one line, once it has ended; '' if it says nothing or does not end in ``timeout``."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return ''
        return one_line(self.raw_text())

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self):
        self.errors.close()
