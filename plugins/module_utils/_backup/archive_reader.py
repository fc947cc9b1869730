# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Reads a backup's tar stream (zstd-compressed or plain) member by member, checking each strictly as it goes by."""

from __future__ import annotations

import re
import tarfile

from .errors import BackupDamaged, UnsafeMember
from .files import CHUNK, dense
from .manifest import MAP_LIMIT, normalise_regions
from .members import Member, check_relative, member_path
from .zstd import MAGIC, decompressor

BLOCK = tarfile.BLOCKSIZE   # 512
ZERO_BLOCK = bytes(BLOCK)
PAX_LIMIT = 1 << 20
PAX_KEPT = ('mtime', 'atime', 'ctime', 'uid', 'gid', 'uname', 'gname')
SPARSE_KEYS = ('GNU.sparse.major', 'GNU.sparse.minor', 'GNU.sparse.name', 'GNU.sparse.realsize')
REFUSED_TYPES = {tarfile.SYMTYPE: 'a symbolic link', tarfile.LNKTYPE: 'a hard link',
                 tarfile.CHRTYPE: 'a character device', tarfile.BLKTYPE: 'a block device',
                 tarfile.FIFOTYPE: 'a FIFO'}


def parse_pax(data):
    """Records of a pax extended header (``"<len> <key>=<value>\\n"``), strictly."""
    records = {}
    pos = 0
    while pos < len(data):
        if data[pos:].strip(b'\x00') == b'':
            break
        space = data.find(b' ', pos)
        if space < 0:
            raise BackupDamaged('malformed pax header')
        try:
            length = int(data[pos:space])
        except ValueError:
            raise BackupDamaged('malformed pax header') from None
        record = data[pos:pos + length]
        if length <= space - pos + 1 or len(record) != length or not record.endswith(b'\n') or b'=' not in record:
            raise BackupDamaged('malformed pax header')
        key, _eq, value = record[space - pos + 1:-1].partition(b'=')
        records[key.decode('utf-8', 'surrogateescape')] = value.decode('utf-8', 'surrogateescape')
        pos += length
    return records


class ArchiveSource:
    """Members of a (zstd-compressed) tar stream, checked strictly as they go by."""

    kind = 'archive'

    def __init__(self, path, stage=None, fails=None):
        """The archive file ``path``; or, with ``stage``, the tar stream on a program's stdout (restic dump),
        ``path`` naming it and ``fails(text)`` the error for the program's complaint."""
        self.path = path
        self.buf = bytearray(CHUNK)
        self.view = memoryview(self.buf)
        self.stage = stage
        self.offset = 0
        self.top = None
        self.compressed = False
        self.fails = fails or (lambda text: BackupDamaged('zstd cannot decompress it (%s): the archive is damaged or truncated' % text))
        if stage is None:
            with open(path, 'rb') as handle:
                self.compressed = handle.read(4) == MAGIC
            if self.compressed:
                self.stage = decompressor(path)
        self.stream = self.stage.proc.stdout if self.stage else open(path, 'rb', buffering=0)

    def _damaged(self, what):
        return BackupDamaged('the archive is damaged: %s (at byte %d of the tar stream)' % (what, self.offset))

    def _stage_text(self):
        if self.stage is None:
            return ''
        text = self.stage.text(timeout=5)
        # zstd prefixes its message with (the tail of) the file name: keep the message.
        return text.split(' : ', 1)[1] if ' : ' in text and self.compressed else text

    def _fill(self, view):
        """Fill ``view`` completely from the stream, or fail as truncated."""
        got = 0
        while got < len(view):
            count = self.stream.readinto(view[got:])
            if not count:
                why = self._stage_text()
                if why:
                    raise self.fails(why)
                raise BackupDamaged('it ends early at byte %d of the tar stream: the archive is truncated' % self.offset)
            got += count
        self.offset += got

    def _read(self, size):
        data = bytearray(size)
        self._fill(memoryview(data))
        return bytes(data)

    def _skip_padding(self, size):
        pad = -size % BLOCK
        if pad and self._read(pad) != bytes(pad):
            raise self._damaged('non-zero padding after a member')

    def members(self):
        pax = None
        while True:
            header = self._read(BLOCK)
            if header == ZERO_BLOCK:
                if pax is not None:
                    raise self._damaged('pax header without a member')
                self._finish()
                return
            try:
                info = tarfile.TarInfo.frombuf(header, 'utf-8', 'surrogateescape')
            except tarfile.HeaderError as exc:
                raise self._damaged('invalid tar header (%s)' % exc) from None
            if info.type == tarfile.XHDTYPE:
                if pax is not None or info.size > PAX_LIMIT:
                    raise self._damaged('unexpected pax header')
                pax = parse_pax(self._read(info.size))
                self._skip_padding(info.size)
                continue
            member, stored = self._member(info, pax or {})
            pax = None
            yield member
            if not member.is_dir:
                self._skip_padding(stored)

    def _member(self, info, records):
        """The Member a tar header (and its pax records) describes, and the size it takes in the stream."""
        name, size = info.name, info.size
        kind = REFUSED_TYPES.get(info.type)
        if kind or info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
            raise UnsafeMember('member %r is %s: vm_backup never writes one' %
                               (records.get('path', name), kind or 'of tar type %r' % info.type))
        sparse = False
        for key, value in records.items():
            if key == 'path':
                name = value
            elif key == 'size':
                size = self._number(value)
            elif key in SPARSE_KEYS:
                sparse = True
            elif key not in PAX_KEPT:
                raise self._damaged('member %r carries unexpected pax record %r' % (name, key))
        if sparse:
            if records.get('GNU.sparse.major') != '1' or records.get('GNU.sparse.minor') != '0' \
                    or 'GNU.sparse.name' not in records or 'GNU.sparse.realsize' not in records:
                raise self._damaged('member %r uses a sparse format other than GNU 1.0' % name)
            name = records['GNU.sparse.name']
        if self.top is None:
            check_relative(name.rstrip('/') if len(name) > 1 else name)
            self.top = name.rstrip('/').split('/')[0]
        rel = member_path(name, self.top)
        if info.type == tarfile.DIRTYPE:
            if size:
                raise self._damaged('directory member %r has data' % name)
            return Member(rel, is_dir=True), 0
        if not rel:
            raise UnsafeMember('member %r is a file where the backup directory should be' % name)
        if not sparse:
            return Member(rel, size=size, regions=dense(size)), size
        realsize = self._number(records['GNU.sparse.realsize'])
        regions, map_size = self._read_map(realsize)
        if size - map_size != sum(length for _off, length in regions):
            raise self._damaged('member %r: its sparse map does not match its size' % name)
        return Member(rel, size=realsize, regions=regions), size

    def _number(self, text):
        if not re.match(r'^\d{1,20}$', text):
            raise self._damaged('malformed number %r in a pax header' % text)
        return int(text)

    def _read_map(self, realsize):
        text = b''
        consumed = 0
        numbers = []
        wanted = None
        while wanted is None or len(numbers) < wanted:
            if consumed > MAP_LIMIT * 48:
                raise self._damaged('sparse map too large')
            block = self._read(BLOCK)
            consumed += BLOCK
            text += block
            while b'\n' in text and (wanted is None or len(numbers) < wanted):
                line, text = text.split(b'\n', 1)
                if not re.match(rb'^\d{1,20}$', line):
                    raise self._damaged('malformed sparse map')
                if wanted is None:
                    wanted = 1 + 2 * int(line)
                    if wanted > 1 + 2 * MAP_LIMIT:
                        raise self._damaged('sparse map too large')
                numbers.append(int(line))
        if text.strip(b'\x00'):
            raise self._damaged('garbage after a sparse map')
        pairs = list(zip(numbers[1::2], numbers[2::2]))
        return normalise_regions(pairs, realsize), consumed

    def read(self, member, acquire):
        """Yield ``(offset, buf, count)`` for the member's data, each piece in ``buf[:count]`` of an acquired buffer."""
        for offset, length in member.regions:
            pos, end = offset, offset + length
            while pos < end:
                buf = acquire()
                count = min(len(buf), end - pos)
                self._fill(memoryview(buf)[:count])
                yield pos, buf, count
                pos += count

    def _finish(self):
        # Everything after the first zero block must be zero too, to the very end.
        while True:
            count = self.stream.readinto(self.view)
            if not count:
                break
            if self.buf.count(0, 0, count) != count:
                raise self._damaged('data after the end-of-archive marker')
            self.offset += count
        if self.stage is not None:
            code = self.stage.proc.wait()
            if code != 0:
                raise self.fails(self._stage_text() or 'exit code %d' % code)

    def close(self):
        if self.stage is not None:
            self.stage.kill()
            self.stage.proc.stdout.close()
            self.stage.close()
        else:
            self.stream.close()
