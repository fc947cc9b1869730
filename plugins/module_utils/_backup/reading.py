# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""One pass over a backup (archive or directory): every path checked, every byte hashed, each file handed on."""

from __future__ import annotations

import os

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput, OperationFailed

from .archive_reader import BLOCK, ArchiveSource
from .digest import ContentDigest, digest_bytes
from .directory import DirectorySource
from .errors import BackupDamaged, UnsafeMember
from .manifest import (CHECKSUMS, MANIFEST, SMALL_LIMIT, XML_ROLES, Manifest, check_checksums,
                       load_checksums)
from .members import member_dirs
from .pipeline import Pipeline
from .progress import advance
from .progress import current as progress
from .zstd import MAGIC


def open_source(src):
    """The reader for a backup: a directory, a .tar.zst or a .tar path, or a backup in a repository."""
    if hasattr(src, 'open'):
        return src.open()
    if not os.path.isabs(src):
        raise InvalidInput('src must be an absolute path, got %r (a restic snapshot ID or latest needs repository)'
                           % src)
    if not os.path.exists(src):
        raise InvalidInput('src %s does not exist: give the path of a backup made by vm_backup (state=present '
                           'returns it as backup.path)' % src)
    if os.path.isdir(src):
        return DirectorySource(os.path.realpath(src))
    if not os.path.isfile(src):
        raise InvalidInput('src %s is neither a file nor a directory' % src)
    with open(src, 'rb') as handle:
        head = handle.read(BLOCK)
    if len(head) < BLOCK and not head.startswith(MAGIC):
        raise BackupDamaged('it is only %d bytes long: truncated, or not a backup made by vm_backup' % len(head))
    if not head.startswith(MAGIC) and head[257:262] != b'ustar':
        raise BackupDamaged('it is neither a zstd-compressed nor a plain tar archive: not a backup made by vm_backup')
    return ArchiveSource(src)


def read_small(source, member):
    """The whole data of a small member (XML, JSON) of an open source."""
    if member.size > SMALL_LIMIT:
        raise BackupDamaged('%s is too large (%d bytes)' % (member.name, member.size))
    data = b''.join(bytes(buf[:count]) for _pos, buf, count in source.read(member, lambda: source.buf))
    if len(data) != member.size:
        raise BackupDamaged('%s is shorter than recorded' % member.name)
    return data


class Reading:
    """One pass over a backup: every path checked, every byte hashed, each file handed to a handler.

    ``handler`` (optional) has ``prepare(manifest, small)`` called once the manifest and
    the XML files are in (before any other file's data), returning ``{name: writer}``
    for the files to write; a writer has ``write(offset, buf, count)`` and ``finish()``.
    """

    def __init__(self, src, handler=None, phase=None):
        self.src = src
        self.phase = phase    # the progress phase this pass reports, from the manifest on (None: none)
        try:
            self.source = open_source(src)
        except BackupDamaged as exc:
            raise self._fail(exc) from None
        self.handler = handler
        self.manifest = None
        self.small = {}
        self.digests = {}
        self.checksums = None
        self.data_size = 0
        self.prepared = False
        self.writers = {}
        self.pipe = None

    def _fail(self, exc):
        return type(exc)('backup %s is unusable: %s: use another backup (nothing was changed)' % (self.src, exc))

    def run(self):
        try:
            self._run()
        except BackupDamaged as exc:
            raise self._fail(exc) from None
        finally:
            if self.pipe is not None:
                self.pipe.stop(OperationFailed('stopped'))
            self.source.close()
        return self

    def _acquire(self):
        return self.pipe.acquire() if self.pipe is not None else self.source.buf

    def _release(self, buf):
        if self.pipe is not None:
            self.pipe.release(buf)

    def _run(self):
        seen = set()
        expected_dirs = expected = None
        for member in self.source.members():
            if member.name in seen:
                raise BackupDamaged(('directory %r appears twice' if member.is_dir else '%s appears twice')
                                    % member.name)
            if member.is_dir:
                if expected_dirs is not None and member.name not in expected_dirs:
                    raise UnsafeMember('unexpected directory %r in the backup' % member.name)
                seen.add(member.name)
                continue
            seen.add(member.name)
            if self.manifest is None:
                if member.name != MANIFEST:
                    raise BackupDamaged('its first file is %s, not %s: not a backup made by vm_backup'
                                        % (member.name, MANIFEST))
                self.manifest = Manifest.from_bytes(self._slurp(member))
                expected = {entry.name: entry for entry in self.manifest.files}
                expected_dirs = {''} | set(member_dirs(expected))
                self.source.manifest = self.manifest
                if self.phase:
                    progress().phase(self.phase, total=sum(length for entry in self.manifest.files
                                                           if entry.role not in XML_ROLES
                                                           for _off, length in entry.regions))
                continue
            if member.name == CHECKSUMS:
                self.checksums = load_checksums(self._slurp(member, digest=False))
                continue
            if self.checksums is not None:
                raise BackupDamaged('%s follows the checksum list' % member.name)
            entry = expected.get(member.name)
            if entry is None:
                raise UnsafeMember('unexpected member %r: not listed in the manifest' % member.name)
            if member.size != entry.size:
                raise BackupDamaged('%s has %d bytes, the manifest says %d: damaged' % (member.name, member.size, entry.size))
            if entry.role in XML_ROLES:
                self.small[member.name] = self._slurp(member)
                if entry.piecewise_sha256 is not None and entry.piecewise_sha256 != self.digests[member.name]:
                    raise BackupDamaged('the SHA-256 of %s does not match the manifest: the file is damaged'
                                        % member.name)
                continue
            if not self.prepared:
                self._prepare()
            self._stream(member, entry)
        self._check_complete(seen, expected)
        if not self.prepared:
            self._prepare()
        if self.pipe is not None:
            self.pipe.drain()
        for writer in self.writers.values():
            writer.finish()

    def _check_complete(self, seen, expected):
        if self.manifest is None:
            raise BackupDamaged('it holds no %s: not a backup made by vm_backup' % MANIFEST)
        if self.checksums is None:
            raise BackupDamaged('it holds no %s: incomplete (interrupted while it was written?)' % CHECKSUMS)
        missing = [name for name in expected if name not in seen]
        if missing:
            raise BackupDamaged('it lacks %s' % ', '.join(missing))
        self.checksums = check_checksums(self.checksums, self.manifest)
        for name, digest in self.checksums.items():
            if self.digests.get(name) != digest:
                raise BackupDamaged('the SHA-256 of %s does not match its checksum: the file is damaged' % name)

    def _prepare(self):
        self.prepared = True
        if self.handler is not None:
            self.writers = self.handler.prepare(self.manifest, self.small) or {}
        if self.writers:
            self.pipe = Pipeline()

    def _slurp(self, member, digest=True):
        data = read_small(self.source, member)
        if digest:
            self.digests[member.name] = digest_bytes(data)
        return data

    def _stream(self, member, entry):
        if member.regions != entry.regions:
            raise BackupDamaged('the sparse map of %s differs from the manifest: damaged' % member.name)
        digest = ContentDigest(member.size)
        writer = self.writers.get(member.name)
        progress().set(disk=entry.target or member.name, file=getattr(writer, 'path', None))
        for pos, buf, count in self.source.read(member, self._acquire):
            digest.update(pos, buf, count)
            if writer is not None:
                self.pipe.submit(writer.write, (pos, buf, count), buf)
            else:
                self._release(buf)
            self.data_size += count
            advance(count)
        self.digests[member.name] = digest.hexdigest()

    def summary(self):
        """What was read, as vm_backup returns it (``verified``)."""
        manifest = self.manifest
        return dict(
            self.src.result() if hasattr(self.src, 'result') else dict(path=self.src),
            format=self.source.kind,
            compressed=getattr(self.source, 'compressed', False),
            format_version=manifest.format_version,
            name=manifest.name,
            created=manifest.created,
            domain=manifest.domain_name,
            uuid=manifest.uuid,
            libvirt_version=manifest.host.get('libvirt'),
            qemu_version=manifest.host.get('qemu'),
            files=[dict(name=e.name, role=e.role, path=e.path, size=e.size, sparse=e.map is not None,
                        sha256=self.checksums[e.name]) for e in manifest.files],
            snapshots=list(manifest.order),
            current_snapshot=manifest.current,
            data_size=self.data_size,
            manifest_sha256=self.checksums[MANIFEST],
        )
