# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The zstd program as a pipe stage: one process, its error text kept for a one-line message."""

from __future__ import annotations

import subprocess
import tempfile

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import OperationFailed, one_line

from .files import set_pipe_size

MAGIC = b'\x28\xb5\x2f\xfd'


class Zstd:
    """One ``zstd`` process; its stderr goes to a temporary file, read back for the error text."""

    def __init__(self, args, way_out, **pipes):
        self.errors = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(['zstd'] + args, stderr=self.errors, bufsize=0, close_fds=True, **pipes)
        except FileNotFoundError:
            self.errors.close()
            raise OperationFailed('zstd not found: install the zstd package%s' % way_out) from None

    def text(self, timeout=None):
        """zstd's complaint in one line, once it has ended; '' if it says nothing or does not end in ``timeout``."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return ''
        self.errors.seek(0)
        return one_line(self.errors.read().decode('utf-8', 'replace'))

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self):
        self.errors.close()


def compressor(level, threads):
    """zstd compressing what is written to ``.proc.stdin``; the compressed stream comes out of ``.proc.stdout``."""
    args = ['-q', '-c', '-%d' % level, '-T%d' % threads]
    if level > 19:
        args.insert(0, '--ultra')
    zstd = Zstd(args, ', or set compression: none', stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    set_pipe_size(zstd.proc.stdin.fileno())
    set_pipe_size(zstd.proc.stdout.fileno())
    return zstd


def decompressor(path):
    """zstd decompressing the file ``path`` to ``.proc.stdout``."""
    zstd = Zstd(['-d', '-c', '-q', '--', path], ' to read %s' % path, stdout=subprocess.PIPE)
    set_pipe_size(zstd.proc.stdout.fileno())
    return zstd
