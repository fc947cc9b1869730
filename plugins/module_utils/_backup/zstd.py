# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""zstd as a pipe stage: compressing a stream, decompressing a file."""

from __future__ import annotations

import subprocess

from .files import set_pipe_size
from .stage import Stage

MAGIC = b'\x28\xb5\x2f\xfd'


def compressor(level, threads):
    """zstd compressing what is written to ``.proc.stdin`` onto ``.proc.stdout``."""
    args = ['-q', '-c', '-%d' % level, '-T%d' % threads]
    if level > 19:
        args.insert(0, '--ultra')
    zstd = Stage(['zstd'] + args, 'zstd not found: install the zstd package, or set compression: none',
                 stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    set_pipe_size(zstd.proc.stdin.fileno())
    set_pipe_size(zstd.proc.stdout.fileno())
    return zstd


def decompressor(path):
    """zstd decompressing the file ``path`` to ``.proc.stdout``."""
    zstd = Stage(['zstd', '-d', '-c', '-q', '--', path], 'zstd not found: install the zstd package to read %s' % path,
                 stdout=subprocess.PIPE)
    set_pipe_size(zstd.proc.stdout.fileno())
    return zstd
