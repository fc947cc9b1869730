# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Backups of one domain with all its snapshots: manifest, writer, verifier, restorer.

Private to kvm.snapshots: no stable API for other collections.

A backup is a directory tree, either packed into one tar stream (compressed by
the ``zstd`` program, so plain ``tar -I zstd -xf`` opens it) or kept as plain
files::

    <name>/manifest.json     first: what is in the backup, where it came from
    <name>/domain.xml        the inactive definition, with security info
    <name>/snapshots/0001.xml ...  every snapshot, parents before children
    <name>/nvram/...  tpm/...  disks/NN-<image>
    <name>/checksums.json    last: SHA-256 of every file, the manifest included

where ``<name>`` is ``<label>-<UUID tag>-<UTC stamp to the millisecond>`` (see
backup_name). Which domain a backup belongs to is the UUID in its manifest,
never the label.

Sparse files stay sparse: only their data regions (``SEEK_DATA``/``SEEK_HOLE``)
are read, stored (GNU tar's sparse format 1.0 in the archive) and hashed. A
file's ``sha256`` is the SHA-256 of the SHA-256s of its 64 KiB pieces (see
ContentDigest): holes cost nothing to hash and pieces hash on all cores. It is
not what ``sha256sum`` prints. The regions are in the manifest, so a copy can
be checked whatever its own layout.

Everything streams through fixed buffers: memory does not grow with disk size.
Reading a backup (verify or restore) is one pass; a restore writes every file
under a temporary name next to its destination and renames it into place
only after the whole backup checked out.
"""

from __future__ import annotations

import collections
import datetime
import errno
import fcntl
import hashlib
import json
import os
import queue
import re
import secrets
import shutil
import stat
import subprocess
import tarfile
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (
    Connection,
    InvalidInput,
    KvmError,
    OperationFailed,
    domain_disks,
    domain_state,
    etree,
    libvirt,
    lookup_domain,
    note_undone,
    one_line,
    parse_xml,
    qemu_img_info,
    translate,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._snapshot import SnapshotTree, is_uefi, redefine_snapshot


FORMAT = 'kvm.snapshots.vm_backup'
FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
CHECKSUMS = 'checksums.json'

CHUNK = 1 << 20             # read/write unit; the only buffer that scales with data
FLUSH_EVERY = 64 << 20      # start writing back to disk every this many bytes, so the final fsync is short
ZERO_RUN = 64 << 10         # a restored block of this many zero bytes becomes a hole
BLOCK = tarfile.BLOCKSIZE   # 512
ZERO_BLOCK = bytes(BLOCK)
ZSTD_MAGIC = b'\x28\xb5\x2f\xfd'
SMALL_LIMIT = 64 << 20      # XML and JSON members are read into memory up to this size
PAX_LIMIT = 1 << 20
MAP_LIMIT = 1 << 22         # regions in one sparse map
NAME_STAMP = '%Y%m%dT%H%M%S'
TAG_LENGTH = 8                      # hex digits of the domain UUID in a backup's name
LOCK_DIR = '/run/kvm.snapshots'    # root's; other users get a private one in the temp directory
SUFFIXES = {'zstd': '.tar.zst', 'none': '.tar', 'directory': ''}
PARTIAL = '.partial-'
RESTORING = '.kvmsnap-restore-'
REPLACED = '.kvmsnap-replaced-'
# Test-only pause point (see test_pause): inert unless this variable names the point.
PAUSE_ENV = 'KVMSNAP_TEST_PAUSE'

NVRAM_DIR = '/var/lib/libvirt/qemu/nvram'
SWTPM_DIR = '/var/lib/libvirt/swtpm'

DISK_ROLES = ('disk', 'backing', 'snapshot-disk', 'memory')
FILE_ROLES = DISK_ROLES + ('nvram', 'tpm')
XML_ROLES = ('domain', 'snapshot')
ROLES = XML_ROLES + FILE_ROLES

FICLONE = 0x40049409        # ioctl: reflink a whole file (XFS, Btrfs, ...)

# A file's digest: SHA-256 over the SHA-256 of each of its PIECE-sized pieces, in order.
PIECE = 64 << 10
PIECE_ZEROS = bytes(PIECE)
ZERO_PIECE_DIGEST = hashlib.sha256(PIECE_ZEROS).digest()
DIGEST = dict(algorithm='sha256', piece_size=PIECE,
              form='SHA-256 of the concatenated SHA-256 digests of the consecutive pieces of the file')


class BackupDamaged(KvmError):
    """The backup is damaged, unsafe or not one of ours; nothing was touched."""


class UnsafeMember(BackupDamaged):
    """An archive member whose path would land outside the backup."""


# --------------------------------------------------------------------------
# Small pure helpers (unit tested)
# --------------------------------------------------------------------------

def human_size(num):
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(num) < 1024 or unit == 'TiB':
            return ('%d %s' % (num, unit)) if unit == 'B' else ('%.1f %s' % (num, unit))
        num /= 1024.0
    return str(num)


def safe_label(text):
    """``text`` reduced to characters that are safe and unambiguous in a file name."""
    label = re.sub(r'[^A-Za-z0-9._+-]', '_', text).lstrip('.')
    return label or '_'


def uuid_tag(uuid):
    """The first hex digits of a domain UUID: enough to tell a host's domains apart in a file name."""
    return uuid.replace('-', '').lower()[:TAG_LENGTH]


def backup_name(domain_name, when, uuid):
    """A backup's name; it sorts by time within one domain.

    ``<label>-<UUID tag>-<UTC stamp, ms>``, so ``web 1`` and ``web_1`` (both labelled
    ``web_1``) never share a name. Names written before (``<label>-<UTC stamp>``) are
    still recognised by listing (``OLD_NAME_PATTERN``).
    """
    return '%s-%s-%s.%03dZ' % (safe_label(domain_name), uuid_tag(uuid), when.strftime(NAME_STAMP),
                               when.microsecond // 1000)


NAME_PATTERN = re.compile(r'^(?P<label>.+)-(?P<tag>[0-9a-f]{%d})-(?P<stamp>\d{8}T\d{6})\.(?P<ms>\d{3})Z'
                          r'(?P<suffix>\.tar\.zst|\.tar)?$' % TAG_LENGTH)
OLD_NAME_PATTERN = re.compile(r'^(?P<label>.+)-(?P<stamp>\d{8}T\d{6})Z(?P<suffix>\.tar\.zst|\.tar)?$')


def partial_pattern(domain_name, uuid=None):
    """Leftovers of a killed run: by label (names written before), or by UUID tag with ``uuid``."""
    if uuid is not None:
        return re.compile(r'^\..+-%s-\d{8}T\d{6}\.\d{3}Z(\.tar\.zst|\.tar)?%s[0-9a-f]+$'
                          % (uuid_tag(uuid), re.escape(PARTIAL)))
    return re.compile(r'^\.%s-\d{8}T\d{6}Z(\.tar\.zst|\.tar)?%s[0-9a-f]+$'
                      % (re.escape(safe_label(domain_name)), re.escape(PARTIAL)))


def _complete_kind(entry, match):
    """A name with a tar suffix must be a file, one without a directory; anything else is not ours."""
    if match.group('suffix'):
        return entry.is_file(follow_symlinks=False)
    return entry.is_dir(follow_symlinks=False)


def read_manifest(path):
    """The manifest of the backup at ``path``, read from the head of its stream only; None if it has none.

    Cheap whatever the backup's size: an archive is decompressed only as far as
    its first member (zstd is stopped there), a directory's manifest.json is read.
    """
    try:
        source = open_source(path)
    except (KvmError, OSError):
        return None
    try:
        for member in source.members():
            if member.is_dir:
                continue
            if member.name != MANIFEST or member.size > SMALL_LIMIT:
                return None
            data = b''.join(bytes(buf[:count]) for _pos, buf, count in source.read(member, lambda: source.buf))
            return check_manifest(json.loads(data))
    except (KvmError, ValueError, OSError):
        return None
    finally:
        source.close()
    return None


def domain_backups(dest, uuid):
    """Complete backups in ``dest`` of the domain with ``uuid``, oldest first: ``[(entry_name, path)]``.

    The domain is the UUID its manifest records. Candidates are the names carrying
    that UUID's tag and every old-style name (whose label may be another domain's,
    or this one's before a rename); each is confirmed by its manifest. A backup
    whose manifest cannot be read belongs to no domain here, so retention never
    removes it.
    """
    tag = uuid_tag(uuid)
    found = []
    try:
        entries = list(os.scandir(dest))
    except FileNotFoundError:
        return []
    for entry in entries:
        match = NAME_PATTERN.match(entry.name)
        if match:
            if match.group('tag') != tag:
                continue
            key = (match.group('stamp'), match.group('ms'))
        else:
            match = OLD_NAME_PATTERN.match(entry.name)
            if not match:
                continue
            key = (match.group('stamp'), '000')
        if not _complete_kind(entry, match):
            continue
        manifest = read_manifest(entry.path)
        if manifest is None or str(manifest['domain'].get('uuid', '')).lower() != uuid.lower():
            continue
        found.append((key, entry.name, entry.path))
    return [(name, path) for _key, name, path in sorted(found)]


def free_name(dest, domain_name, uuid, when, suffix):
    """A backup name not yet taken in ``dest``: the stamp moves on by a millisecond until it is free.

    Called under the domain's lock, so no other backup of this domain picks the same
    name meanwhile; other domains' names differ by their UUID tag.
    """
    while True:
        name = backup_name(domain_name, when, uuid)
        if not any(os.path.lexists(os.path.join(dest, name + other)) for other in set(SUFFIXES.values()) | {suffix}):
            return name, when
        when += datetime.timedelta(milliseconds=1)


def check_relative(name, what='member'):
    """A relative path inside a backup: no ``..``, no absolute path, no empty or ``.`` parts."""
    if not isinstance(name, str) or not name:
        raise UnsafeMember('%s with an empty path' % what)
    if '\x00' in name:
        raise UnsafeMember('%s %r holds a NUL byte' % (what, name))
    if name.startswith('/'):
        raise UnsafeMember('%s %r is an absolute path' % (what, name))
    parts = name.split('/')
    if '..' in parts:
        raise UnsafeMember("%s %r climbs out with '..'" % (what, name))
    if any(part in ('', '.') for part in parts):
        raise UnsafeMember('%s %r is not a normalised path' % (what, name))
    return name


def member_path(name, top):
    """The path inside the backup of archive member ``name`` (``''`` for the top directory).

    Refuses anything that would land outside ``top``: absolute paths, ``..``,
    empty or ``.`` parts, another top directory.
    """
    stripped = name[:-1] if name.endswith('/') and len(name) > 1 else name
    check_relative(stripped)
    head, _sep, rest = stripped.partition('/')
    if head != top:
        raise UnsafeMember('member %r lies outside the backup directory %r' % (name, top))
    return rest


def check_absolute(path, what):
    """An absolute, normalised path (a destination written by restore)."""
    if not isinstance(path, str) or not path.startswith('/') or '\x00' in path \
            or os.path.normpath(path) != path or path == '/':
        raise BackupDamaged('%s: %r is not a normalised absolute path' % (what, path))
    return path


def normalise_regions(regions, size):
    """Data regions without empty ones, as ``[(offset, length)]``; checks order and bounds."""
    out = []
    end = 0
    for region in regions:
        if not isinstance(region, (list, tuple)) or len(region) != 2:
            raise BackupDamaged('malformed sparse map entry %r' % (region,))
        offset, length = region
        if not isinstance(offset, int) or not isinstance(length, int) or offset < 0 or length < 0:
            raise BackupDamaged('malformed sparse map entry %r' % (region,))
        if offset < end or offset + length > size:
            raise BackupDamaged('sparse map entry %r overlaps or lies beyond the file size %d' % (region, size))
        if length:
            out.append((offset, length))
            end = offset + length
    return out


def member_dirs(names):
    """Every directory the member ``names`` lie in, the top ('') included."""
    dirs = {''}
    for name in names:
        parent = os.path.dirname(name)
        while parent:
            dirs.add(parent)
            parent = os.path.dirname(parent)
    return dirs


def dense(size):
    return [(0, size)] if size else []


def entry_regions(entry):
    """The data regions the manifest records for a file entry."""
    if entry.get('map') is None:
        return dense(entry['size'])
    return normalise_regions(entry['map'], entry['size'])


MANIFEST_KEYS = ('format', 'format_version', 'name', 'created', 'domain', 'files', 'snapshots')
NAME_RULES = {
    'domain': re.compile(r'^domain\.xml$'),
    'snapshot': re.compile(r'^snapshots/\d{4,}\.xml$'),
    'nvram': re.compile(r'^nvram/[^/]+$'),
    'tpm': re.compile(r'^tpm/.+$'),
}


def check_manifest(manifest):
    """Raise ``BackupDamaged`` unless ``manifest`` is a manifest this collection can read.

    A newer format version is refused with advice to upgrade. Returns the manifest.
    """
    if not isinstance(manifest, dict) or manifest.get('format') != FORMAT:
        raise BackupDamaged('its manifest is not a %s manifest' % FORMAT)
    version = manifest.get('format_version')
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BackupDamaged('its manifest has no valid format_version')
    if version > FORMAT_VERSION:
        raise BackupDamaged('it has format version %d, newer than the %d this kvm.snapshots reads: '
                            'upgrade the kvm.snapshots collection to verify or restore it' % (version, FORMAT_VERSION))
    if manifest.get('digest', DIGEST) != DIGEST:
        raise BackupDamaged('its manifest uses a checksum form this kvm.snapshots does not know: upgrade the '
                            'kvm.snapshots collection to verify or restore it')
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise BackupDamaged('its manifest lacks %s' % ', '.join(missing))
    domain = manifest['domain']
    if not isinstance(domain, dict) or not isinstance(domain.get('name'), str) or not domain.get('name') \
            or not isinstance(domain.get('uuid'), str):
        raise BackupDamaged('its manifest has no valid domain name and uuid')
    files = manifest['files']
    if not isinstance(files, list) or not files:
        raise BackupDamaged('its manifest lists no files')
    seen = set()
    for entry in files:
        if not isinstance(entry, dict):
            raise BackupDamaged('its manifest has a malformed file entry')
        name = check_relative(entry.get('name'), 'manifest file')
        role = entry.get('role')
        if role not in ROLES:
            raise BackupDamaged('manifest file %r has unknown role %r' % (name, role))
        if name in (MANIFEST, CHECKSUMS):
            raise BackupDamaged('manifest file %r uses a reserved name' % name)
        if name in seen:
            raise BackupDamaged('manifest file %r is listed twice' % name)
        seen.add(name)
        rule = NAME_RULES.get(role)
        if rule is not None and not rule.match(name):
            raise BackupDamaged('manifest file %r does not fit role %s' % (name, role))
        if role in DISK_ROLES and not re.match(r'^disks/[^/]+$', name):
            raise BackupDamaged('manifest file %r does not fit role %s' % (name, role))
        size = entry.get('size')
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise BackupDamaged('manifest file %r has no valid size' % name)
        if role in XML_ROLES and size > SMALL_LIMIT:
            raise BackupDamaged('manifest file %r is too large for an XML file' % name)
        if entry.get('map') is not None:
            if not isinstance(entry['map'], list) or len(entry['map']) > MAP_LIMIT:
                raise BackupDamaged('manifest file %r has a malformed sparse map' % name)
            normalise_regions(entry['map'], size)
        if role in FILE_ROLES:
            check_absolute(entry.get('path'), 'manifest file %r' % name)
        if entry.get('sha256') is not None and not (isinstance(entry['sha256'], str)
                                                    and re.match(r'^[0-9a-f]{64}$', entry['sha256'])):
            raise BackupDamaged('manifest file %r has a malformed sha256' % name)
        if role == 'snapshot' and not isinstance(entry.get('snapshot'), str):
            raise BackupDamaged('manifest file %r names no snapshot' % name)
    roles = [entry['role'] for entry in files]
    if roles.count('domain') != 1:
        raise BackupDamaged('its manifest does not list exactly one domain.xml')
    snaps = manifest['snapshots']
    if not isinstance(snaps, dict) or not isinstance(snaps.get('order'), list):
        raise BackupDamaged('its manifest has no snapshot order')
    by_snapshot = {entry['snapshot']: entry for entry in files if entry['role'] == 'snapshot'}
    if sorted(by_snapshot) != sorted(snaps['order']) or len(set(snaps['order'])) != len(snaps['order']):
        raise BackupDamaged('its manifest snapshot order does not match its snapshot files')
    current = snaps.get('current')
    if current is not None and current not in by_snapshot:
        raise BackupDamaged('its manifest names a current snapshot it does not hold')
    return manifest


def check_checksums(checksums, manifest):
    """``checksums.json`` must give a SHA-256 for the manifest and each of its files, and nothing else."""
    if not isinstance(checksums, dict) or checksums.get('format') != FORMAT or not isinstance(checksums.get('sha256'), dict):
        raise BackupDamaged('its %s is not a %s checksum list' % (CHECKSUMS, FORMAT))
    digests = checksums['sha256']
    wanted = {MANIFEST} | {entry['name'] for entry in manifest['files']}
    if set(digests) != wanted:
        raise BackupDamaged('its %s does not list exactly the files of the manifest' % CHECKSUMS)
    for name, digest in digests.items():
        if not isinstance(digest, str) or not re.match(r'^[0-9a-f]{64}$', digest):
            raise BackupDamaged('its %s has a malformed digest for %s' % (CHECKSUMS, name))
    return digests


def rewrite_paths(xml, mapping):
    """``xml`` (a domain or snapshot definition) with every disk and memory file path in ``mapping`` replaced.

    Covers ``<disk><source file>`` and nested ``<backingStore>`` anywhere (the domain,
    a snapshot's embedded ``<domain>`` and ``<inactiveDomain>``, its ``<disks>``),
    and a snapshot's ``<memory file>``.
    """
    if not mapping:
        return xml
    root = parse_xml(xml)
    changed = False
    for disk in root.iter('disk'):
        for source in disk.iter('source'):
            path = source.get('file')
            if path in mapping:
                source.set('file', mapping[path])
                changed = True
    for memory in root.iter('memory'):
        path = memory.get('file')
        if path in mapping:
            memory.set('file', mapping[path])
            changed = True
    if not changed:
        return xml
    return etree.tostring(root, encoding='unicode')


def referenced_files(xml):
    """Every local disk image and memory file path a domain or snapshot definition names."""
    root = parse_xml(xml)
    paths = []
    for disk in root.iter('disk'):
        if disk.get('device') in ('cdrom', 'floppy'):
            continue
        for source in disk.iter('source'):
            if source.get('file'):
                paths.append(source.get('file'))
    for memory in root.iter('memory'):
        if memory.get('file'):
            paths.append(memory.get('file'))
    return paths


def data_regions(fd, size):
    """Data regions of an open file as ``[(offset, length)]`` via ``SEEK_DATA``/``SEEK_HOLE``."""
    return list(data_regions_from(fd, 0, size))


def sparse_map_block(regions, size):
    """The data-area prefix GNU tar's sparse format 1.0 puts before a member's data."""
    entries = list(regions)
    if not entries or entries[-1][0] + entries[-1][1] < size:
        entries.append((size, 0))  # as GNU tar does: the map always reaches the real size
    text = '%d\n' % len(entries) + ''.join('%d\n%d\n' % entry for entry in entries)
    raw = text.encode('ascii')
    return raw + bytes(-len(raw) % BLOCK)


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


class ContentDigest:
    """SHA-256 of the list of SHA-256 digests of a file's 64 KiB pieces.

    The digest depends on the file's content only, not on where its holes are:
    a hole and written zeros give the same piece digest, and a piece that is all
    hole costs one table lookup, so a 20 GiB sparse disk with 200 MiB of data
    hashes in the time of its data. Recompute it with::

        top = hashlib.sha256()
        for piece in iter(lambda: handle.read(65536), b''):
            top.update(hashlib.sha256(piece).digest())

    Data is fed with ``update(offset, buf, count)`` in increasing offsets; the
    gaps between are zeros.
    """

    def __init__(self, size):
        self.size = size
        self.top = hashlib.sha256()
        self.pos = 0
        self.part = None   # the piece being filled, when pos is inside one

    def _piece_end(self):
        return min(self.pos - self.pos % PIECE + PIECE, self.size)

    def _close(self):
        self.top.update(self.part.digest())
        self.part = None

    def _zeros_to(self, offset):
        if offset < self.pos or offset > self.size:
            raise OperationFailed('data out of order at offset %d' % offset)
        while self.pos < offset:
            end = self._piece_end()
            if self.part is None and self.pos % PIECE == 0 and offset >= end:
                if end - self.pos == PIECE:
                    count = min((offset - self.pos) // PIECE, 4096)
                    self.top.update(ZERO_PIECE_DIGEST * count)
                    self.pos += count * PIECE
                else:  # the short last piece
                    self.top.update(hashlib.sha256(PIECE_ZEROS[:end - self.pos]).digest())
                    self.pos = end
                continue
            stop = min(offset, end)
            if self.part is None:
                self.part = hashlib.sha256()
            self.part.update(PIECE_ZEROS[:stop - self.pos])
            self.pos = stop
            if self.pos == end:
                self._close()

    def update(self, offset, buf, count):
        """Feed ``buf[:count]`` (a bytearray or bytes) as the data at ``offset``."""
        self._zeros_to(offset)
        if self.pos + count > self.size:
            raise OperationFailed('more data than the file size at offset %d' % offset)
        view = memoryview(buf)
        index = 0
        while index < count:
            end = self._piece_end()
            take = min(end - self.pos, count - index)
            if self.part is None and take == PIECE:
                # A run of whole pieces: hash_pieces spreads a long one over several cores.
                whole = (count - index) // PIECE
                self.top.update(hash_pieces(buf, view, index, whole))
                index += whole * PIECE
                self.pos += whole * PIECE
                continue
            if self.part is None:
                self.part = hashlib.sha256()
            self.part.update(view[index:index + take])
            index += take
            self.pos += take
            if self.pos == end:
                self._close()

    def add_piece_digests(self, first, digests):
        """Feed the digests of whole pieces from piece number ``first`` on (a short last piece included)."""
        self._zeros_to(first * PIECE)
        if self.part is not None:
            raise OperationFailed('piece digests out of order at piece %d' % first)
        self.top.update(digests)
        self.pos = min(self.pos + len(digests) // 32 * PIECE, self.size)

    def hexdigest(self):
        self._zeros_to(self.size)
        return self.top.hexdigest()


DIGEST_UNIT = 64 * PIECE    # what one job of file_digest reads and hashes: 4 MiB
_HASHERS = []


def hash_pool():
    """The threads that hash pieces (hashlib releases the GIL): one per core, at most 8."""
    if not _HASHERS:
        workers = min(os.cpu_count() or 1, 8)
        _HASHERS.append((ThreadPoolExecutor(max_workers=workers, thread_name_prefix='kvm-snapshots-hash'), workers))
    return _HASHERS[0]


def _piece_digests(buf, view, start, count):
    out = []
    for index in range(start, start + count * PIECE, PIECE):
        if buf.startswith(PIECE_ZEROS, index):
            out.append(ZERO_PIECE_DIGEST)
        else:
            out.append(hashlib.sha256(view[index:index + PIECE]).digest())
    return b''.join(out)


def hash_pieces(buf, view, start, count):
    """The digests of ``count`` whole pieces from ``start``, computed on up to all cores."""
    pool, workers = hash_pool()
    if workers < 2 or count < 4:
        return _piece_digests(buf, view, start, count)
    parts = min(workers, count)
    share = -(-count // parts)
    futures = []
    for first in range(share, count, share):
        futures.append(pool.submit(_piece_digests, buf, view, start + first * PIECE, min(share, count - first)))
    head = _piece_digests(buf, view, start, min(share, count))
    return head + b''.join(future.result() for future in futures)


def data_pieces(regions):
    """The pieces that hold data, as merged ``[first, end)`` ranges of piece numbers."""
    runs = []
    for offset, length in regions:
        if length <= 0:
            continue
        first, end = offset // PIECE, -(-(offset + length) // PIECE)
        if runs and first <= runs[-1][1]:
            runs[-1][1] = max(runs[-1][1], end)
        else:
            runs.append([first, end])
    return runs


def _digest_unit(fd, size, first, count, buf):
    """Read pieces ``first`` .. ``first + count`` of ``fd`` into ``buf`` and return their digests."""
    start = first * PIECE
    length = min(count * PIECE, size - start)
    view = memoryview(buf)
    got = 0
    while got < length:
        done = os.preadv(fd, [view[got:length]], start + got)
        if done <= 0:
            raise OperationFailed('file shrank while being read at offset %d' % (start + got))
        got += done
    whole = length // PIECE
    out = _piece_digests(buf, view, 0, whole)
    if length % PIECE:
        out += hashlib.sha256(view[whole * PIECE:length]).digest()
    return out


def file_digest(fd, size, regions):
    """The ContentDigest of the open file ``fd``, its data pieces read and hashed on all cores.

    Every job reads its own 4 MiB with ``pread``, so reading overlaps hashing and
    no core waits for another; pieces outside ``regions`` are not read at all.
    At most two jobs per core are in flight: memory stays bounded.
    """
    pool, workers = hash_pool()
    buffers = queue.Queue()
    for _count in range(2 * workers):
        buffers.put(bytearray(DIGEST_UNIT))
    digest = ContentDigest(size)
    pending = collections.deque()

    def settle_one():
        first, future, buf = pending.popleft()
        try:
            digests = future.result()
        finally:
            buffers.put(buf)
        digest.add_piece_digests(first, digests)

    try:
        for first, end in data_pieces(regions):
            for unit in range(first, end, DIGEST_UNIT // PIECE):
                if buffers.empty():
                    settle_one()
                buf = buffers.get()
                count = min(DIGEST_UNIT // PIECE, end - unit)
                pending.append((unit, pool.submit(_digest_unit, fd, size, unit, count, buf), buf))
        while pending:
            settle_one()
    finally:
        for _first, future, _buf in pending:
            future.cancel()
        wait([future for _first, future, _buf in pending])
    return digest.hexdigest()


def digest_bytes(data):
    digest = ContentDigest(len(data))
    digest.update(0, data, len(data))
    return digest.hexdigest()


def version_text(number):
    """libvirt's packed version number (major * 1000000 + minor * 1000 + micro) as text."""
    return '%d.%d.%d' % (number // 1000000, number // 1000 % 1000, number % 1000)


def utcnow_ms():
    now = datetime.datetime.now(datetime.timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


# --------------------------------------------------------------------------
# Files and directories created 0600 / 0700 whatever the umask
# --------------------------------------------------------------------------

def create_file(path, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.fchmod(fd, mode)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_all(fd, data):
    """``os.write`` until all of ``data`` is written (a pipe takes it piece by piece)."""
    view = memoryview(data)
    while len(view):
        view = view[os.write(fd, view):]


def make_dir(path, mode=0o700):
    os.mkdir(path, mode)
    os.chmod(path, mode)


def make_dirs(path, mode=0o700):
    """Create ``path`` and missing parents, each with ``mode`` exactly."""
    missing = []
    while not os.path.isdir(path):
        if os.path.lexists(path):
            raise InvalidInput('%s exists and is not a directory: choose a directory' % path)
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for directory in reversed(missing):
        try:
            make_dir(directory, mode)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
            # another run (a backup of another domain into the same dest) made it meanwhile
    return bool(missing)


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def try_lock(fd):
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def remove_stale(directory, pattern):
    """Remove leftovers of killed runs: entries matching ``pattern`` whose lock nobody holds."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        if not pattern.match(entry.name):
            continue
        try:
            fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            if not try_lock(fd):
                continue  # another run is writing it
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                os.unlink(entry.path)
            removed.append(entry.path)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def test_pause(point):
    """Test-only: stop at ``point`` when ``KVMSNAP_TEST_PAUSE=<point>:<flag file>`` is set; inert otherwise.

    Writes this process's pid into the flag file and sleeps (10 minutes at most), so an
    integration test can SIGKILL the module inside a window that is otherwise far too
    short to hit. Points: ``restore-commit`` (domain undefined, first file set aside).
    """
    spec = os.environ.get(PAUSE_ENV, '')
    if not spec.startswith(point + ':'):
        return
    with open(spec.split(':', 1)[1], 'w') as handle:
        handle.write('%d\n' % os.getpid())
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        time.sleep(0.1)


def set_aside_leftovers(paths, domain_names=()):
    """Files an interrupted restore set aside beside ``paths``: ``[path]``.

    Those of ``paths`` themselves (previous disks) and of the domains ``domain_names``
    (definition, snapshots); other domains' leftovers in the same directories are theirs.
    They hold the data a restore replaced; nothing ever deletes them but the restore that
    made them, so a killed one leaves them for the user, and the next restore names them.
    """
    bases = {os.path.basename(p) for p in paths} | {'%s.xml' % safe_label(n) for n in domain_names}
    snapshots = tuple('.%s.snapshot-' % safe_label(n) for n in domain_names)
    found = set()
    for directory in sorted({os.path.dirname(p) for p in paths}):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        found.update(os.path.join(directory, n) for n in names if n.startswith('.') and REPLACED in n
                     and (n.split(REPLACED)[0][1:] in bases or n.startswith(snapshots)))
    return sorted(found)


PIPE_SIZE = 8 << 20  # room for zstd to run ahead while we hash


def set_pipe_size(fd):
    """A large pipe lets zstd and this process work at the same time instead of by turns."""
    for size in (PIPE_SIZE, CHUNK):
        try:
            fcntl.fcntl(fd, getattr(fcntl, 'F_SETPIPE_SZ', 1031), size)
            return
        except OSError:
            continue  # above /proc/sys/fs/pipe-max-size without CAP_SYS_RESOURCE: try smaller


def no_space(exc):
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def read_chunks(fd, regions, buf):
    """Yield ``(offset, n)`` for each piece of ``regions`` read into ``buf[:n]``, in order."""
    view = memoryview(buf)
    for offset, length in regions:
        pos, end = offset, offset + length
        while pos < end:
            count = os.preadv(fd, [view[:min(len(buf), end - pos)]], pos)
            if count <= 0:
                raise OperationFailed('file shrank while being read at offset %d' % pos)
            yield pos, count
            pos += count


class SparseWriter:
    """Writes data at offsets into an open file, leaving runs of zeros as holes."""

    def __init__(self, fd):
        self.fd = fd
        self.zeros = bytes(ZERO_RUN)
        self.flusher = Flusher(fd)

    def write(self, offset, buf, count):
        view = memoryview(buf)
        start = None  # start (index into buf) of a pending non-zero run
        pos = 0
        while pos < count:
            step = min(ZERO_RUN - (offset + pos) % ZERO_RUN, count - pos)
            is_zero = buf.startswith(self.zeros[:step], pos)
            if is_zero:
                if start is not None:
                    self._pwrite(view[start:pos], offset + start)
                    start = None
            elif start is None:
                start = pos
            pos += step
        if start is not None:
            self._pwrite(view[start:count], offset + start)

    def _pwrite(self, view, offset):
        while len(view):
            done = os.pwrite(self.fd, view, offset)
            view = view[done:]
            offset += done
        self.flusher.wrote(offset)


class Flusher:
    """Starts the kernel's write-back of a growing file every FLUSH_EVERY bytes.

    Without it every dirty page waits for the final fsync; with it the disk writes
    while we still read and compress, and written pages leave the page cache
    instead of pushing out the host's working set.
    """

    def __init__(self, fd):
        self.fd = fd
        self.done = 0

    def wrote(self, end):
        if end - self.done >= FLUSH_EVERY:
            try:
                os.posix_fadvise(self.fd, self.done, end - self.done, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass  # only an optimisation
            self.done = end


class Pipeline:
    """Runs writes on one background thread, in order, from a fixed pool of buffers.

    Hashing (main thread) and writing (this thread) overlap; both release the GIL.
    Memory stays at ``buffers`` chunks whatever the data size. The first error
    stops the writes and comes back out of ``acquire`` or ``drain``.
    """

    def __init__(self, buffers=4, size=CHUNK):
        self.free = queue.Queue()
        for _count in range(buffers):
            self.free.put(bytearray(size))
        self.jobs = queue.Queue()
        self.error = None
        self.thread = threading.Thread(target=self._work, name='kvm-snapshots-writer', daemon=True)
        self.thread.start()

    def _work(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            func, args, buf = job
            try:
                if self.error is None:
                    func(*args)
            except BaseException as exc:  # handed to the main thread
                self.error = exc
            finally:
                if buf is not None:
                    self.free.put(buf)

    def _raise(self):
        if self.error is not None:
            raise self.error

    def acquire(self):
        buf = self.free.get()
        if self.error is not None:
            self.free.put(buf)
            self._raise()
        return buf

    def release(self, buf):
        self.free.put(buf)

    def submit(self, func, args, buf=None):
        self.jobs.put((func, args, buf))

    def drain(self):
        done = threading.Event()
        self.jobs.put((done.set, (), None))
        done.wait()
        self._raise()

    def close(self):
        if self.thread.is_alive():
            self.jobs.put(None)
            self.thread.join()


# --------------------------------------------------------------------------
# Writing a backup: a tar+zstd stream or a directory
# --------------------------------------------------------------------------

class ArchiveSink:
    """A tar stream (POSIX pax, GNU sparse 1.0 for files with holes) into ``fd``, through ``zstd`` or not."""

    def __init__(self, fd, top, mtime, compression='zstd', level=3, threads=0):
        self.fd = fd
        self.top = top
        self.mtime = int(mtime)
        self.proc = None
        self.errors = None
        self.pipe = Pipeline()
        self.flusher = Flusher(fd)
        self.written = self.flushed_at = 0
        if compression == 'zstd':
            cmd = ['zstd', '-q', '-c', '-%d' % level, '-T%d' % threads]
            if level > 19:
                cmd.insert(1, '--ultra')
            self.errors = tempfile.TemporaryFile()
            try:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=fd, stderr=self.errors, bufsize=0,
                                             close_fds=True)
            except FileNotFoundError:
                raise OperationFailed('zstd not found: install the zstd package, or set compression: none') from None
            self.out = self.proc.stdin.fileno()
            set_pipe_size(self.out)
        else:
            self.out = fd

    def _write(self, data):
        self.pipe.submit(self._write_now, (bytes(data),))

    def _write_now(self, data):
        try:
            write_all(self.out, data)
        except BrokenPipeError:
            raise OperationFailed('zstd stopped: %s' % self._zstd_error()) from None
        self.written += len(data)
        if self.written - self.flushed_at >= FLUSH_EVERY:
            self.flushed_at = self.written
            self.flusher.wrote(os.fstat(self.fd).st_size)

    def _zstd_error(self):
        if self.proc is None:
            return ''
        self.proc.wait()
        self.errors.seek(0)
        text = one_line(self.errors.read().decode('utf-8', 'replace'))
        if 'No space left' in text:
            raise OSError(errno.ENOSPC, 'No space left on device')
        return text or 'exit code %s' % self.proc.returncode

    def _header(self, name, size, kind=tarfile.REGTYPE, mode=0o600, pax=None):
        info = tarfile.TarInfo(name)
        info.size = size
        info.type = kind
        info.mode = mode
        info.mtime = self.mtime
        info.uid, info.gid = os.getuid(), os.getgid()
        info.uname = info.gname = ''
        if pax:
            info.pax_headers = dict(pax)
        return info.tobuf(tarfile.PAX_FORMAT, 'utf-8', 'surrogateescape')

    def _name(self, rel):
        return '%s/%s' % (self.top, rel) if rel else self.top

    def add_dir(self, rel):
        self._write(self._header(self._name(rel), 0, tarfile.DIRTYPE, 0o700))

    def add_bytes(self, rel, data):
        self._write(self._header(self._name(rel), len(data)))
        self._write(data)
        self._write(bytes(-len(data) % BLOCK))
        return digest_bytes(data)

    def add_file(self, rel, fd, size, regions):
        """Stream the data regions of ``fd``; return the SHA-256 of that data."""
        name = self._name(rel)
        if regions == dense(size):
            self._write(self._header(name, size))
            stored = size
        else:
            head, _sep, base = name.rpartition('/')
            block = sparse_map_block(regions, size)
            stored = len(block) + sum(length for _off, length in regions)
            pax = {'GNU.sparse.major': '1', 'GNU.sparse.minor': '0',
                   'GNU.sparse.name': name, 'GNU.sparse.realsize': str(size)}
            self._write(self._header('%s/GNUSparseFile.0/%s' % (head, base), stored, pax=pax))
            self._write(block)
        digest = ContentDigest(size)
        for offset, length in regions:
            pos, end = offset, offset + length
            while pos < end:
                buf = self.pipe.acquire()
                view = memoryview(buf)
                count = os.preadv(fd, [view[:min(len(buf), end - pos)]], pos)
                if count <= 0:
                    self.pipe.release(buf)
                    raise OperationFailed('file shrank while being read at offset %d' % pos)
                digest.update(pos, buf, count)
                self.pipe.submit(self._write_now, (view[:count],), buf)
                pos += count
        self._write(bytes(-stored % BLOCK))
        return digest.hexdigest()

    def close(self):
        """End the archive; wait for zstd; make it durable."""
        self._write(bytes(2 * BLOCK))
        self.pipe.drain()
        self.pipe.close()
        if self.proc is not None:
            self.proc.stdin.close()
            if self.proc.wait() != 0:
                raise OperationFailed('zstd failed: %s' % self._zstd_error())
            self.errors.close()
        os.fsync(self.fd)

    def abort(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.pipe.error = self.pipe.error or OperationFailed('aborted')
        self.pipe.close()
        if self.errors is not None:
            self.errors.close()

    def size(self):
        return os.fstat(self.fd).st_size


def copy_regions(src, dst, regions):
    """Copy the data regions of ``src`` into ``dst`` at the same offsets, in the kernel where it can."""
    flusher = Flusher(dst)
    for index, (offset, length) in enumerate(regions):
        pos, end = offset, offset + length
        while pos < end:
            try:
                done = os.copy_file_range(src, dst, min(FLUSH_EVERY, end - pos), pos, pos)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                # the kernel cannot copy between these two files: read and write the rest
                writer, buf = SparseWriter(dst), bytearray(CHUNK)
                for at, count in read_chunks(src, [(pos, end - pos)] + regions[index + 1:], buf):
                    writer.write(at, buf, count)
                return
            if done <= 0:
                raise OperationFailed('file shrank while being read at offset %d' % pos)
            pos += done
            flusher.wrote(pos)


class DirectorySink:
    """The backup as plain files: reflink copies where the file system can, sparse copies otherwise."""

    def __init__(self, root):
        self.root = root
        self.dirs = [root]

    def _path(self, rel):
        return os.path.join(self.root, rel) if rel else self.root

    def add_dir(self, rel):
        if rel:
            make_dir(self._path(rel))
            self.dirs.append(self._path(rel))

    def add_bytes(self, rel, data):
        fd = create_file(self._path(rel))
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        return digest_bytes(data)

    def add_file(self, rel, src, size, regions):
        fd = create_file(self._path(rel))
        try:
            try:
                fcntl.ioctl(fd, FICLONE, src)
                cloned = True
            except OSError:
                cloned = False  # no reflinks here (or across file systems)
            if cloned:
                digest = file_digest(src, size, regions)
            else:
                # the kernel copies on one thread while the others read and hash
                with ThreadPoolExecutor(max_workers=1, thread_name_prefix='kvm-snapshots-copy') as copier:
                    copied = copier.submit(copy_regions, src, fd, regions)
                    digest = file_digest(src, size, regions)
                copied.result()
                os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        return digest

    def close(self):
        for directory in self.dirs:
            fsync_dir(directory)

    def abort(self):
        pass

    def size(self):
        total = 0
        for base, _dirs, files in os.walk(self.root):
            for name in files:
                total += os.lstat(os.path.join(base, name)).st_blocks * 512
        return total


# --------------------------------------------------------------------------
# What a domain's backup holds
# --------------------------------------------------------------------------

class Plan:
    """Everything one backup of one domain will hold, found before anything is written."""

    def __init__(self, conn, dom):
        self.name = dom.name()
        self.uuid = dom.UUIDString()
        self.xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE)
        self.root = parse_xml(self.xml)
        self.tree = SnapshotTree.from_domain(dom, secure=True)
        self.order = self.tree.topological()
        self.current = self.tree.current
        self.autostart = bool(dom.autostart())
        self.files = []          # file entries (dicts), manifest order
        self.by_path = {}
        self.warnings = []
        self.tpm_dirs = []
        self.versions = dict(libvirt=version_text(conn.getLibVersion()))
        try:
            self.versions['qemu'] = version_text(conn.getVersion())
        except libvirt.libvirtError:
            self.versions['qemu'] = None
        try:
            self.versions['hostname'] = conn.getHostname()
        except libvirt.libvirtError:
            self.versions['hostname'] = None
        self._collect()

    # -- discovery ---------------------------------------------------------

    def _collect(self):
        self._check_disks()
        self._nvram()
        self._tpm()
        for disk in domain_disks(self.root):
            if disk['path']:
                self._chain(disk['path'], 'disk', disk['target'])
        for name in self.order:
            snap_root = parse_xml(self.tree.by_name[name].xml)
            for disk in snap_root.iterfind('disks/disk'):
                source = disk.find('source')
                if disk.get('snapshot') == 'external' and source is not None and source.get('file'):
                    self._chain(source.get('file'), 'snapshot-disk', disk.get('name'), snapshot=name)
            memory = snap_root.find('memory')
            if memory is not None and memory.get('file'):
                self._add_plain(memory.get('file'), 'memory', snapshot=name)
            for path in referenced_files(self.tree.by_name[name].xml):
                if path not in self.by_path and os.path.realpath(path) not in self.by_path:
                    if os.path.exists(path):
                        self._chain(path, 'snapshot-disk', None, snapshot=name)
                    else:
                        self.warnings.append("snapshot '%s' refers to %s, which does not exist: not in the backup"
                                             % (name, path))

    def _check_disks(self):
        for disk in self.root.iterfind('devices/disk'):
            if disk.get('device', 'disk') not in ('disk', 'lun'):
                continue
            kind = disk.get('type', 'file')
            target = disk.find('target').get('dev')
            source = disk.find('source')
            if kind == 'network':
                protocol = source.get('protocol') if source is not None else 'network'
                raise InvalidInput("disk %s of domain '%s' is a network disk (%s): vm_backup only backs up local "
                                   "file disks; back it up on the storage side, or detach it first"
                                   % (target, self.name, protocol))
            if kind != 'file' and source is not None and (source.attrib or len(source)):
                raise InvalidInput("disk %s of domain '%s' has type '%s': vm_backup only backs up local file disks "
                                   "(type 'file'); convert it or detach it first" % (target, self.name, kind))

    def _nvram(self):
        os_el = self.root.find('os')
        if os_el is None:
            return
        nvram = os_el.find('nvram')
        path = nvram.text.strip() if nvram is not None and nvram.text else None
        if path is None:
            if not is_uefi(self.root):
                return
            path = os.path.join(NVRAM_DIR, '%s_VARS.fd' % self.name)  # libvirt's default
        if os.path.isfile(path):
            self._add_plain(path, 'nvram', member='nvram/' + safe_label(os.path.basename(path)))

    def _tpm(self):
        emulated = [tpm for tpm in self.root.iterfind('devices/tpm')
                    if tpm.find('backend') is not None and tpm.find('backend').get('type') == 'emulator']
        state = os.path.join(SWTPM_DIR, self.uuid)
        if not emulated or not os.path.isdir(state):
            return
        for base, dirs, files in os.walk(state):
            dirs.sort()
            rel_dir = os.path.relpath(base, state)
            info = os.lstat(base)
            self.tpm_dirs.append(dict(path=base, mode='%04o' % stat.S_IMODE(info.st_mode),
                                      uid=info.st_uid, gid=info.st_gid))
            for name in sorted(files):
                path = os.path.join(base, name)
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                rel = name if rel_dir == '.' else os.path.join(rel_dir, name)
                self._add_plain(path, 'tpm', member='tpm/' + '/'.join(safe_label(p) for p in rel.split('/')))

    def _chain(self, path, role, target, snapshot=None):
        if path in self.by_path:
            return
        chain = qemu_img_info(path, backing_chain=True)
        previous = None
        for depth, image in enumerate(chain):
            filename = image.get('filename') or path
            if ':' in filename.split('/')[0] or filename.startswith('json:') or not filename.startswith('/'):
                raise InvalidInput("image %s (in the chain of %s) is not a local file: vm_backup only backs up "
                                   "local file disks" % (filename, path))
            entry = self.by_path.get(filename)
            if entry is None:
                entry = self._add_plain(filename, role if depth == 0 else 'backing', target=target,
                                        snapshot=snapshot, fmt=image.get('format'))
            if previous is not None:
                previous['backing'] = entry['name']
            if image.get('backing-filename'):
                entry['backing_file'] = image['backing-filename']
                entry['backing_format'] = image.get('backing-filename-format')
            previous = entry

    def _add_plain(self, path, role, target=None, snapshot=None, fmt=None, member=None):
        path = os.path.abspath(path)
        if path in self.by_path:
            return self.by_path[path]
        try:
            info = os.stat(path)
        except OSError as exc:
            raise OperationFailed('cannot read %s (%s of domain %s): %s' % (path, role, self.name, exc.strerror)) from None
        if not stat.S_ISREG(info.st_mode):
            raise InvalidInput('%s (%s of domain %s) is not a regular file: vm_backup only backs up local file '
                               'disks' % (path, role, self.name))
        if member is None:
            index = sum(1 for entry in self.files if entry['role'] in DISK_ROLES)
            member = 'disks/%02d-%s' % (index, safe_label(os.path.basename(path)))
        entry = dict(name=member, role=role, path=path, size=info.st_size,
                     allocated=info.st_blocks * 512, mode='%04o' % stat.S_IMODE(info.st_mode),
                     uid=info.st_uid, gid=info.st_gid)
        if target:
            entry['target'] = target
        if snapshot:
            entry['snapshot'] = snapshot
        if fmt:
            entry['format'] = fmt
        self.files.append(entry)
        self.by_path[path] = entry
        self.by_path[os.path.realpath(path)] = entry
        return entry

    # -- sizes ---------------------------------------------------------------

    def allocated(self):
        return sum(entry['allocated'] for entry in self.files) + len(self.xml) + \
            sum(len(self.tree.by_name[n].xml) for n in self.order)

    def manifest(self, name, created, state, params):
        # The XML files' digests are in the manifest too, so that a restore can trust them
        # (and plan where the files go) before the checksum list at the end arrives.
        created = created.replace(microsecond=0)  # the name carries the milliseconds
        raw = self.xml.encode()
        files = [dict(name='domain.xml', role='domain', size=len(raw), sha256=digest_bytes(raw))]
        self.snapshot_files = []
        for index, snap in enumerate(self.order, 1):
            data = self.tree.by_name[snap].xml.encode()
            rel = 'snapshots/%04d.xml' % index
            files.append(dict(name=rel, role='snapshot', snapshot=snap, size=len(data), sha256=digest_bytes(data)))
            self.snapshot_files.append((rel, data))
        for entry in self.files:
            files.append({k: v for k, v in entry.items() if k != 'allocated'})
        return dict(
            format=FORMAT,
            format_version=FORMAT_VERSION,
            name=name,
            created=created.isoformat().replace('+00:00', 'Z'),
            created_epoch=int(created.timestamp()),
            digest=DIGEST,
            domain=dict(name=self.name, uuid=self.uuid, state=state, autostart=self.autostart),
            host=self.versions,
            options=dict(format=params['format'],
                         compression=params['compression'] if params['format'] == 'archive' else None,
                         compression_level=(params['compression_level'] or 3)
                         if params['format'] == 'archive' and params['compression'] == 'zstd' else None,
                         if_running=params['if_running']),
            files=files,
            snapshots=dict(order=list(self.order), current=self.current),
            tpm_dirs=self.tpm_dirs,
        )


# --------------------------------------------------------------------------
# state=present
# --------------------------------------------------------------------------

def _check_backup_options(params):
    if params['keep'] is not None and params['keep'] < 1:
        raise InvalidInput('keep must be 1 or more (it counts the backup just made), got %d: omit keep to keep '
                           'every backup' % params['keep'])
    if params['threads'] < 0:
        raise InvalidInput('threads must be 0 (all cores) or more, got %d' % params['threads'])
    if params['compression_level'] is not None and not 1 <= params['compression_level'] <= 22:
        raise InvalidInput('compression_level must be between 1 and 22 (zstd levels), got %d'
                           % params['compression_level'])
    if params['format'] == 'directory' and (params['compression_level'] is not None or params['compression'] != 'zstd'):
        raise InvalidInput('compression and compression_level only apply to format archive: drop them, '
                           'or set format: archive')
    if params['compression'] == 'none' and params['compression_level'] is not None:
        raise InvalidInput('compression_level needs compression: zstd, not none: drop compression_level, '
                           'or drop compression: none')
    if params['shutdown_timeout'] < 1:
        raise InvalidInput('shutdown_timeout must be 1 second or more, got %d' % params['shutdown_timeout'])
    for key in ('src', 'disk_dir'):
        if params.get(key) is not None:
            raise InvalidInput('%s only applies to state verified or restored, not present' % key)
    if params.get('force') or params.get('start'):
        raise InvalidInput('force and start only apply to state restored, not present')
    dest = params['dest']
    if not os.path.isabs(dest):
        raise InvalidInput('dest must be an absolute path, got %r' % dest)
    if os.path.lexists(dest) and not os.path.isdir(dest):
        raise InvalidInput('dest %s exists and is not a directory: choose a directory' % dest)


def _wait_state(dom, wanted, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if domain_state(dom) in wanted:
            return True
        time.sleep(0.25)
    return domain_state(dom) in wanted


def _free_bytes(path):
    info = os.statvfs(path)
    return info.f_bavail * info.f_frsize


def _check_writable(dest):
    """Refuse a ``dest`` (or, when missing, its nearest existing parent) this run cannot write into.

    Checked before free space (a read-only file system may report 0 bytes free) and
    before the domain is paused or shut down; in check mode too.
    """
    anchor = _existing_parent(dest)
    where = dest if anchor == dest else '%s (its nearest existing parent is %s)' % (dest, anchor)
    if os.statvfs(anchor).f_flag & os.ST_RDONLY:
        raise InvalidInput('cannot write a backup into %s: Read-only file system: remount it read-write, or choose '
                           'another dest (nothing was paused or written)' % where)
    if not os.access(anchor, os.W_OK | os.X_OK):
        raise InvalidInput('cannot write a backup into %s: Permission denied for uid %d: run as root (become: true), '
                           'fix its permissions, or choose another dest (nothing was paused or written)'
                           % (where, os.geteuid()))


def _probe_writable(dest):
    """Create and remove one file in ``dest``: what an ACL, an immutable flag or a quota would refuse."""
    try:
        fd, path = tempfile.mkstemp(prefix='.kvmsnap-probe-', dir=dest)
    except OSError as exc:
        # dest (and missing parents) may have been created just before: only that was done.
        raise OperationFailed(os_error_text(exc, 'creating a file', dest=dest, way_out='choose another dest')
                              + ' (nothing was paused and no backup was written)') from None
    os.close(fd)
    os.unlink(path)


def lock_dir():
    """The directory of the backup locks, made 0700 if missing; refused when another user could write in it."""
    if os.access(os.path.dirname(LOCK_DIR), os.W_OK):
        directory = LOCK_DIR
    else:
        directory = os.path.join(tempfile.gettempdir(), 'kvm.snapshots-%d' % os.geteuid())
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(directory)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise InvalidInput('the lock directory %s is not a directory owned by uid %d and writable by it alone '
                           '(another user may have made it to block backups): remove it, then run again '
                           '(nothing was paused or written)' % (directory, os.geteuid()))
    return directory


class DomainLock:
    """One backup of a domain at a time on this host: a later one waits for the earlier one.

    The lock is per domain UUID and host-wide rather than per ``dest``: two backups of one
    domain into two places would otherwise pause and resume the guest under each other.
    It lives in a 0700 directory of the user's own on tmpfs (not world-writable /run/lock,
    where any local user could hold it and make root's backup wait forever), so nothing
    is left in ``dest``; the kernel drops it when the process dies, even by SIGKILL. The
    holder removes the file when done; a waiter that then gets the lock of a removed file
    opens the path afresh.
    """

    def __init__(self, uuid):
        self.path = os.path.join(lock_dir(), 'kvm.snapshots-backup-%s.lock' % uuid.lower())
        self.fd = None
        self.waited = 0.0

    def __enter__(self):
        started = time.monotonic()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                if not try_lock(fd):
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    self.waited = round(time.monotonic() - started, 3)
                try:
                    current = os.stat(self.path, follow_symlinks=False).st_ino
                except FileNotFoundError:
                    current = None
            except BaseException:
                os.close(fd)
                raise
            if current == os.fstat(fd).st_ino:
                self.fd = fd
                return self
            os.close(fd)    # the previous holder removed that file: lock the one at the path now

    def __exit__(self, *exc_info):
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None


class DomainHold:
    """Pauses or shuts down a domain for the copy, and brings it back however the copy ends."""

    def __init__(self, dom, action, timeout):
        self.dom = dom
        self.name = dom.name()
        self.action = action
        self.timeout = timeout
        self.touched = False    # set before the call: an interruption inside it still gives the domain back
        self.starting = False   # create() was called: a domain no longer shut off was started by this run

    def take(self):
        if self.action == 'shutdown':
            self.touched = True
            self.dom.shutdown()
            if not _wait_state(self.dom, ('shutoff',), self.timeout):
                self.touched = False    # still running: nothing to start again, and no second wait
                raise OperationFailed("domain '%s' did not shut down within %d s (does its guest handle ACPI "
                                      "shutdown?): raise shutdown_timeout, shut it down yourself, or use "
                                      "if_running: suspend" % (self.name, self.timeout))
        elif self.action == 'suspend':
            self.touched = True
            self.dom.suspend()

    def give_back(self):
        """Start or resume the domain again: ``(what was done or None, error text or None)``."""
        if not self.touched:
            return None, None
        # ``touched`` is cleared only once the domain is back: a signal in the middle of this
        # leaves it set, and the unwinding calls this again.
        try:
            if self.action == 'suspend':
                if domain_state(self.dom) != 'paused':
                    self.touched = False
                    return None, None   # resumed (by this run before an interruption, or by someone else)
                self.dom.resume()
                self.touched = False
                return "domain '%s' was resumed" % self.name, None
            if self.starting and domain_state(self.dom) != 'shutoff':
                self.touched = False
                return "domain '%s' was started again" % self.name, None
            # An interrupted wait: the guest was asked to shut down and may still be going down.
            if not _wait_state(self.dom, ('shutoff',), self.timeout):
                self.touched = False
                return None, ("domain '%s' was asked to shut down and is still %s: check it, and start it when it "
                              "is off ('virsh start %s')" % (self.name, domain_state(self.dom), self.name))
            self.starting = True
            self.dom.create()
            self.touched = False
            return "domain '%s' was started again" % self.name, None
        except libvirt.libvirtError as exc:
            self.touched = False
            return None, ('starting it again failed: %s: start it by hand (virsh start/resume %s)'
                          % (translate(exc), self.name))


def make_backup(params, check_mode=False):
    """vm_backup state=present."""
    _check_backup_options(params)
    started = time.monotonic()
    level = params['compression_level'] if params['compression_level'] is not None else 3
    compression = params['compression'] if params['format'] == 'archive' else 'directory'
    suffix = SUFFIXES[compression]
    dest = params['dest']
    with Connection(params['uri']) as conn:
        dom = lookup_domain(conn, params['domain'])
        if not dom.isPersistent():
            raise InvalidInput("domain '%s' is transient (not defined): define it first ('virsh define'), "
                               "then back it up" % dom.name())
        _check_writable(dest)
        if check_mode:
            return _plan_backup(conn, dom, params, dest, suffix, compression)
        # Everything from the domain's state on is read under the lock: a run that waited sees
        # the domain as the previous backup left it.
        with DomainLock(dom.UUIDString()) as lock:
            result = _make_backup_locked(conn, dom, params, dest, suffix, compression, level)
        if lock.waited:
            result['backup']['waited'] = lock.waited
        result['backup']['duration'] = round(time.monotonic() - started, 3)
        data_size = result['backup']['data_size']
        duration = result['backup']['duration']
        result['backup']['throughput'] = int(data_size / duration) if duration > 0 else None
        return result


def _space_needed(plan, dest):
    needed = plan.allocated() + (1 << 20)
    free_at = _existing_parent(dest)
    free = _free_bytes(free_at)
    if free < needed:
        raise OperationFailed('not enough space in %s for the backup of %s: needs up to %s (allocated size '
                              'of its files), %s free: free space or choose another dest'
                              % (free_at, plan.name, human_size(needed), human_size(free)))
    return needed


def _plan_backup(conn, dom, params, dest, suffix, compression):
    """Check mode: the backup the real run would write, and what ``keep`` would remove."""
    state = domain_state(dom)
    action = _running_action(dom, state, params)
    plan = Plan(conn, dom)
    needed = _space_needed(plan, dest)
    when = utcnow_ms()
    if os.path.isdir(dest):
        name, when = free_name(dest, plan.name, plan.uuid, when, suffix)
        existing = domain_backups(dest, plan.uuid)
    else:
        name, existing = backup_name(plan.name, when, plan.uuid), []
    removed = [path for _n, path in (existing + [(name + suffix, None)])[:-params['keep']]] if params['keep'] else []
    result = dict(changed=True, warnings=plan.warnings) if plan.warnings else dict(changed=True)
    result.update(backup=dict(
        path=os.path.join(dest, name + suffix), name=name, format=params['format'],
        compression=None if compression == 'directory' else compression,
        domain=plan.name, uuid=plan.uuid, action=action,
        files=[dict(name=e['name'], role=e['role'], path=e.get('path'), size=e['size'])
               for e in plan.manifest(name, when, state, params)['files']],
        snapshots=list(plan.order), current_snapshot=plan.current, size=None,
        estimated_size=needed), removed=removed)
    return result


def _make_backup_locked(conn, dom, params, dest, suffix, compression, level):
    state = domain_state(dom)
    action = _running_action(dom, state, params)
    plan = Plan(conn, dom)
    _space_needed(plan, dest)
    # Only now, after every refusal, is dest touched: a refused backup changes nothing.
    make_dirs(dest)
    _probe_writable(dest)
    result = dict(changed=True, warnings=plan.warnings) if plan.warnings else dict(changed=True)
    remove_stale(dest, partial_pattern(plan.name, plan.uuid))
    remove_stale(dest, partial_pattern(plan.name))
    name, when = free_name(dest, plan.name, plan.uuid, utcnow_ms(), suffix)
    hold = DomainHold(dom, action, params['shutdown_timeout'])
    try:
        hold.take()
        outcome = _write_backup(plan, dest, name, suffix, compression, level, params, when, state)
        # Inside the try: a signal before or during the give-back still brings the domain back.
        _done, restart_error = hold.give_back()
    except BaseException as exc:
        done, restart_error = hold.give_back()
        if done:
            note_undone(exc, done)
        if restart_error:
            note_undone(exc, restart_error)
            if isinstance(exc, KvmError):
                raise OperationFailed('%s; and %s' % (exc, restart_error)) from None
        raise
    outcome.update(action=action)
    removed = []
    if params['keep']:
        for _entry, path in domain_backups(dest, plan.uuid)[:-params['keep']]:
            remove_backup(path)
            removed.append(path)
    result.update(backup=outcome, removed=removed)
    if restart_error:
        raise OperationFailed('backup written to %s, but %s' % (outcome['path'], restart_error), **result)
    return result


def remove_backup(path):
    """Remove one backup. A directory first takes a partial's name: cut short, it no longer looks
    complete, and the next backup of the domain removes the rest (``remove_stale``)."""
    if os.path.isdir(path) and not os.path.islink(path):
        directory, base = os.path.split(path)
        doomed = os.path.join(directory, '.%s%s%s' % (base, PARTIAL, secrets.token_hex(4)))
        os.rename(path, doomed)
        shutil.rmtree(doomed)
    else:
        os.unlink(path)


def _existing_parent(path):
    while not os.path.isdir(path):
        path = os.path.dirname(path)
    return path


def _running_action(dom, state, params):
    """What to do about a domain that is not shut off: None, 'shutdown', 'suspend' or 'paused'."""
    if state == 'shutoff':
        return None
    policy = params['if_running']
    if state in ('running', 'blocked', 'paused'):
        if policy == 'fail':
            raise InvalidInput("domain '%s' is %s: shut it down first, or set if_running to shutdown (stop it for "
                               "the copy, start it after) or suspend (pause it for the copy)" % (dom.name(), state))
        if state == 'paused':
            return 'paused'  # already frozen: copy as it is, leave it paused
        return policy
    raise InvalidInput("domain '%s' is in state '%s': shut it off first ('virsh destroy %s')"
                       % (dom.name(), state, dom.name()))


def _open_source_file(entry):
    try:
        src = os.open(entry['path'], os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OperationFailed('cannot read %s: %s' % (entry['path'], exc.strerror)) from None
    if os.fstat(src).st_size != entry['size']:
        os.close(src)
        raise OperationFailed('%s changed size during the backup: is something else writing to it?' % entry['path'])
    return src


def _write_backup(plan, dest, name, suffix, compression, level, params, when, state):
    final = os.path.join(dest, name + suffix)
    partial = os.path.join(dest, '.%s%s%s%s' % (name, suffix, PARTIAL, secrets.token_hex(4)))
    manifest = plan.manifest(name, when, state, params)
    records = manifest['files'][1 + len(plan.snapshot_files):]
    layouts = []
    for entry, record in zip(plan.files, records):
        src = _open_source_file(entry)
        try:
            regions = data_regions(src, entry['size'])
        finally:
            os.close(src)
        if regions != dense(entry['size']):
            record['map'] = [list(region) for region in regions]
        record['sparse'] = regions != dense(entry['size'])
        layouts.append(regions)
    sink = fd = lock = None
    data_size = 0
    files = []
    try:
        if compression == 'directory':
            make_dir(partial)
            lock = os.open(partial, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try_lock(lock)
            sink = DirectorySink(partial)
        else:
            fd = create_file(partial)
            try_lock(fd)
            sink = ArchiveSink(fd, name, when.timestamp(), compression, level, params['threads'])
        digests = {}
        sink.add_dir('')
        data = json.dumps(manifest, indent=1).encode() + b'\n'
        digests[MANIFEST] = sink.add_bytes(MANIFEST, data)
        digests['domain.xml'] = sink.add_bytes('domain.xml', plan.xml.encode())
        made = {''}
        for entry in manifest['files']:
            parent = os.path.dirname(entry['name'])
            parents = []
            while parent and parent not in made:
                parents.append(parent)
                parent = os.path.dirname(parent)
            for directory in reversed(parents):
                sink.add_dir(directory)
                made.add(directory)
        for rel, raw in plan.snapshot_files:
            digests[rel] = sink.add_bytes(rel, raw)
        for entry, regions in zip(plan.files, layouts):
            src = _open_source_file(entry)
            try:
                os.posix_fadvise(src, 0, 0, os.POSIX_FADV_SEQUENTIAL)
                digests[entry['name']] = sink.add_file(entry['name'], src, entry['size'], regions)
                data_size += sum(length for _off, length in regions)
            finally:
                os.close(src)
        checksums = dict(format=FORMAT, sha256=digests)
        sink.add_bytes(CHECKSUMS, json.dumps(checksums, indent=1).encode() + b'\n')
        sink.close()
        size = sink.size()
        if fd is not None:
            os.close(fd)
            fd = None
        if os.path.lexists(final):  # names are chosen under the domain's lock: only a foreign file gets here
            raise OperationFailed('%s appeared while the backup was written: move it away and run again' % final)
        os.rename(partial, final)
        fsync_dir(dest)
    except BaseException as exc:
        if sink is not None:
            sink.abort()
        if fd is not None:
            os.close(fd)
        if os.path.isdir(partial) and not os.path.islink(partial):
            shutil.rmtree(partial, ignore_errors=True)
            note_undone(exc, 'the partial backup %s was removed' % partial)
        elif os.path.lexists(partial):
            os.unlink(partial)
            note_undone(exc, 'the partial backup %s was removed' % partial)
        if isinstance(exc, OSError) and not isinstance(exc, KvmError):
            raise OperationFailed(os_error_text(exc, 'writing the backup of %s' % plan.name, dest=dest,
                                                way_out='choose another dest') + ' (the partial backup was removed)') from None
        raise
    finally:
        if lock is not None:
            os.close(lock)
    for entry in manifest['files']:
        files.append(dict(name=entry['name'], role=entry['role'], path=entry.get('path'), size=entry['size'],
                          sparse=entry.get('sparse', False), sha256=digests[entry['name']]))
    return dict(path=final, name=name, format=params['format'],
                compression=None if compression == 'directory' else compression,
                compression_level=level if compression == 'zstd' else None,
                domain=plan.name, uuid=plan.uuid, created=manifest['created'], size=size,
                data_size=data_size, files=files, snapshots=list(plan.order),
                current_snapshot=plan.current, manifest_sha256=digests[MANIFEST])


# --------------------------------------------------------------------------
# Reading a backup: archive stream or directory, one pass
# --------------------------------------------------------------------------

class Member:
    __slots__ = ('name', 'is_dir', 'size', 'regions')

    def __init__(self, name, is_dir=False, size=0, regions=None):
        self.name = name
        self.is_dir = is_dir
        self.size = size
        self.regions = regions


class ArchiveSource:
    """Members of a (zstd-compressed) tar stream, checked strictly as they go by."""

    kind = 'archive'

    def __init__(self, path):
        self.path = path
        self.buf = bytearray(CHUNK)
        self.view = memoryview(self.buf)
        self.proc = None
        self.errors = None
        self.offset = 0
        self.top = None
        with open(path, 'rb') as handle:
            magic = handle.read(4)
        self.compressed = magic == ZSTD_MAGIC
        if self.compressed:
            self.errors = tempfile.TemporaryFile()
            try:
                self.proc = subprocess.Popen(['zstd', '-d', '-c', '-q', '--', path], stdout=subprocess.PIPE,
                                             stderr=self.errors, bufsize=0, close_fds=True)
            except FileNotFoundError:
                raise OperationFailed('zstd not found: install the zstd package to read %s' % path) from None
            self.stream = self.proc.stdout
            set_pipe_size(self.stream.fileno())
        else:
            self.stream = open(path, 'rb', buffering=0)

    def _damaged(self, what):
        return BackupDamaged('the archive is damaged: %s (at byte %d of the tar stream)' % (what, self.offset))

    def _zstd_text(self):
        if self.proc is None:
            return ''
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                return ''
        self.errors.seek(0)
        text = one_line(self.errors.read().decode('utf-8', 'replace'))
        # zstd prefixes its message with (the tail of) the file name: keep the message.
        return text.split(' : ', 1)[1] if ' : ' in text else text

    def _fill(self, view):
        """Fill ``view`` completely from the stream, or fail as truncated."""
        got = 0
        while got < len(view):
            count = self.stream.readinto(view[got:])
            if not count:
                why = self._zstd_text()
                if why:
                    raise BackupDamaged('zstd cannot decompress it (%s): the archive is damaged or truncated' % why)
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
            name = info.name
            size = info.size
            records = pax or {}
            pax = None
            kind = {tarfile.SYMTYPE: 'a symbolic link', tarfile.LNKTYPE: 'a hard link',
                    tarfile.CHRTYPE: 'a character device', tarfile.BLKTYPE: 'a block device',
                    tarfile.FIFOTYPE: 'a FIFO'}.get(info.type)
            if kind or info.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE):
                raise UnsafeMember('member %r is %s: vm_backup never writes one' %
                                   (records.get('path', name), kind or 'of tar type %r' % info.type))
            sparse = False
            for key, value in records.items():
                if key == 'path':
                    name = value
                elif key == 'size':
                    size = self._number(value)
                elif key in ('GNU.sparse.major', 'GNU.sparse.minor', 'GNU.sparse.name', 'GNU.sparse.realsize'):
                    sparse = True
                elif key not in ('mtime', 'atime', 'ctime', 'uid', 'gid', 'uname', 'gname'):
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
                yield Member(rel, is_dir=True)
                continue
            if not rel:
                raise UnsafeMember('member %r is a file where the backup directory should be' % name)
            if sparse:
                realsize = self._number(records['GNU.sparse.realsize'])
                regions, map_size = self._read_map(realsize)
                stored = size - map_size
                if stored != sum(length for _off, length in regions):
                    raise self._damaged('member %r: its sparse map does not match its size' % name)
                member = Member(rel, size=realsize, regions=regions)
                member_stored = size
            else:
                member = Member(rel, size=size, regions=dense(size))
                member_stored = size
            yield member
            self._skip_padding(member_stored)

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
        if self.proc is not None:
            code = self.proc.wait()
            if code != 0:
                raise BackupDamaged('zstd cannot decompress it (%s): the archive is damaged or truncated'
                                    % (self._zstd_text() or 'exit code %d' % code))

    def close(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait()
            self.proc.stdout.close()
            self.errors.close()
        else:
            self.stream.close()


class DirectorySource:
    """Members of a backup kept as a directory, checked file by file."""

    kind = 'directory'

    def __init__(self, path):
        self.path = path
        self.buf = bytearray(CHUNK)
        self.manifest = None

    def _file(self, rel):
        return os.path.join(self.path, rel)

    def members(self):
        yield Member('', is_dir=True)
        manifest = self._file(MANIFEST)
        if not os.path.isfile(manifest) or os.path.islink(manifest):
            raise BackupDamaged('it has no %s: not a backup made by vm_backup' % MANIFEST)
        yield Member(MANIFEST, size=os.lstat(manifest).st_size, regions=dense(os.lstat(manifest).st_size))
        if self.manifest is None:
            return
        expected = {entry['name']: entry for entry in self.manifest['files']}
        dirs = member_dirs(expected)
        for base, subdirs, files in os.walk(self.path):
            rel_base = os.path.relpath(base, self.path)
            rel_base = '' if rel_base == '.' else rel_base
            for name in subdirs + files:
                rel = os.path.join(rel_base, name) if rel_base else name
                info = os.lstat(os.path.join(base, name))
                if stat.S_ISLNK(info.st_mode):
                    raise UnsafeMember('%s is a symbolic link: vm_backup never writes one' % rel)
                if stat.S_ISDIR(info.st_mode):
                    if rel not in dirs:
                        raise BackupDamaged('unexpected directory %s: not made by vm_backup, or changed since' % rel)
                elif not stat.S_ISREG(info.st_mode):
                    raise UnsafeMember('%s is a device, FIFO or socket: vm_backup never writes one' % rel)
                elif rel not in expected and rel not in (MANIFEST, CHECKSUMS):
                    raise BackupDamaged('unexpected file %s: not made by vm_backup, or changed since' % rel)
                elif info.st_nlink > 1:
                    raise UnsafeMember('%s is a hard link: vm_backup never writes one' % rel)
        for directory in sorted(dirs):
            if directory:
                yield Member(directory, is_dir=True)
        for entry in self.manifest['files']:
            yield Member(entry['name'], size=entry['size'], regions=entry_regions(entry))
        checksums = self._file(CHECKSUMS)
        if not os.path.isfile(checksums) or os.path.islink(checksums):
            raise BackupDamaged('it has no %s: incomplete' % CHECKSUMS)
        yield Member(CHECKSUMS, size=os.lstat(checksums).st_size, regions=dense(os.lstat(checksums).st_size))

    def read(self, member, acquire):
        try:
            fd = os.open(self._file(member.name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise BackupDamaged('%s is missing' % member.name) from None
        except OSError as exc:
            raise BackupDamaged('cannot open %s: %s' % (member.name, exc.strerror)) from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_nlink > 1:
                raise UnsafeMember('%s is not a plain file' % member.name)
            if info.st_size != member.size:
                raise BackupDamaged('%s has %d bytes, the manifest says %d: truncated or changed'
                                    % (member.name, info.st_size, member.size))
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            for offset, length in member.regions:
                pos, end = offset, offset + length
                while pos < end:
                    buf = acquire()
                    count = os.preadv(fd, [memoryview(buf)[:min(len(buf), end - pos)]], pos)
                    if count <= 0:
                        raise BackupDamaged('%s changed while being read' % member.name)
                    yield pos, buf, count
                    pos += count
            self._check_holes(fd, member)
        finally:
            os.close(fd)

    def _check_holes(self, fd, member):
        """Outside the recorded data regions the file must read as zeros."""
        gaps = []
        pos = 0
        for offset, length in member.regions + [(member.size, 0)]:
            if offset > pos:
                gaps.append((pos, offset - pos))
            pos = offset + length
        for offset, length in gaps:
            for data in data_regions_from(fd, offset, offset + length):
                for _pos, count in read_chunks(fd, [data], self.buf):
                    if self.buf.count(0, 0, count) != count:
                        raise BackupDamaged('%s holds data where the manifest records a hole' % member.name)

    def close(self):
        pass


def data_regions_from(fd, pos, end):
    """Yield the data regions of ``fd`` between ``pos`` and ``end``; all of it where holes are unknown."""
    while pos < end:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return
            if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):
                yield pos, end - pos
                return
            raise
        if start >= end:
            return
        stop = min(os.lseek(fd, start, os.SEEK_HOLE), end)
        yield start, stop - start
        pos = stop


def open_source(src):
    """The reader for a backup path: a directory, a .tar.zst or a .tar."""
    if not os.path.isabs(src):
        raise InvalidInput('src must be an absolute path, got %r' % src)
    if not os.path.exists(src):
        raise InvalidInput('src %s does not exist: give the path of a backup made by vm_backup (state=present '
                           'returns it as backup.path)' % src)
    if os.path.isdir(src):
        return DirectorySource(os.path.realpath(src))
    if not os.path.isfile(src):
        raise InvalidInput('src %s is neither a file nor a directory' % src)
    with open(src, 'rb') as handle:
        head = handle.read(BLOCK)
    if len(head) < BLOCK and not head.startswith(ZSTD_MAGIC):
        raise BackupDamaged('it is only %d bytes long: truncated, or not a backup made by vm_backup' % len(head))
    if not head.startswith(ZSTD_MAGIC) and head[257:262] != b'ustar':
        raise BackupDamaged('it is neither a zstd-compressed nor a plain tar archive: not a backup made by vm_backup')
    return ArchiveSource(src)


class Reading:
    """One pass over a backup: every path checked, every byte hashed, each file handed to a handler.

    ``handler`` (optional) has ``prepare(manifest, small)`` called once the manifest and
    the XML files are in (before any other file's data), returning ``{name: writer}``
    for the files to write; a writer has ``write(offset, buf, count)`` and ``finish()``.
    """

    def __init__(self, src, handler=None):
        self.src = src
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
        self.single = bytearray(CHUNK)

    def _fail(self, exc):
        return type(exc)('backup %s is unusable: %s: use another backup (nothing was changed)' % (self.src, exc))

    def run(self):
        try:
            self._run()
        except BackupDamaged as exc:
            raise self._fail(exc) from None
        finally:
            if self.pipe is not None:
                self.pipe.error = self.pipe.error or OperationFailed('stopped')
                self.pipe.close()
            self.source.close()
        return self

    def _acquire(self):
        return self.pipe.acquire() if self.pipe is not None else self.single

    def _release(self, buf):
        if self.pipe is not None:
            self.pipe.release(buf)

    def _run(self):
        seen = set()
        expected_dirs = None
        expected = None
        for member in self.source.members():
            if member.is_dir:
                if expected_dirs is not None and member.name not in expected_dirs:
                    raise UnsafeMember('unexpected directory %r in the backup' % member.name)
                if member.name in seen:
                    raise BackupDamaged('directory %r appears twice' % member.name)
                seen.add(member.name)
                continue
            if member.name in seen:
                raise BackupDamaged('%s appears twice' % member.name)
            seen.add(member.name)
            if self.manifest is None:
                if member.name != MANIFEST:
                    raise BackupDamaged('its first file is %s, not %s: not a backup made by vm_backup'
                                        % (member.name, MANIFEST))
                data = self._slurp(member)
                try:
                    manifest = json.loads(data)
                except ValueError:
                    raise BackupDamaged('its %s is damaged (not valid JSON)' % MANIFEST) from None
                self.manifest = check_manifest(manifest)
                expected = {entry['name']: entry for entry in manifest['files']}
                expected_dirs = member_dirs(expected)
                if isinstance(self.source, DirectorySource):
                    self.source.manifest = manifest
                continue
            if member.name == CHECKSUMS:
                try:
                    self.checksums = json.loads(self._slurp(member, digest=False))
                except ValueError:
                    raise BackupDamaged('its %s is damaged (not valid JSON)' % CHECKSUMS) from None
                continue
            if self.checksums is not None:
                raise BackupDamaged('%s follows the checksum list' % member.name)
            entry = expected.get(member.name)
            if entry is None:
                raise UnsafeMember('unexpected member %r: not listed in the manifest' % member.name)
            if member.size != entry['size']:
                raise BackupDamaged('%s has %d bytes, the manifest says %d: damaged' % (member.name, member.size, entry['size']))
            if entry['role'] in XML_ROLES:
                self.small[member.name] = self._slurp(member)
                if entry.get('sha256') is not None and entry['sha256'] != self.digests[member.name]:
                    raise BackupDamaged('the SHA-256 of %s does not match the manifest: the file is damaged'
                                        % member.name)
                continue
            if not self.prepared:
                self._prepare()
            self._stream(member, entry)
        if self.manifest is None:
            raise BackupDamaged('it holds no %s: not a backup made by vm_backup' % MANIFEST)
        if self.checksums is None:
            raise BackupDamaged('it holds no %s: incomplete (interrupted while it was written?)' % CHECKSUMS)
        missing = [name for name in expected if name not in seen]
        if missing:
            raise BackupDamaged('it lacks %s' % ', '.join(missing))
        digests = check_checksums(self.checksums, self.manifest)
        for name, digest in digests.items():
            if self.digests.get(name) != digest:
                raise BackupDamaged('the SHA-256 of %s does not match its checksum: the file is damaged' % name)
        if not self.prepared:
            self._prepare()
        if self.pipe is not None:
            self.pipe.drain()
        for writer in self.writers.values():
            writer.finish()

    def _prepare(self):
        self.prepared = True
        if self.handler is not None:
            self.writers = self.handler.prepare(self.manifest, self.small) or {}
        if self.writers:
            self.pipe = Pipeline()

    def _slurp(self, member, digest=True):
        if member.size > SMALL_LIMIT:
            raise BackupDamaged('%s is too large (%d bytes)' % (member.name, member.size))
        parts = []
        for _pos, buf, count in self.source.read(member, self._acquire):
            parts.append(bytes(buf[:count]))
            self._release(buf)
        data = b''.join(parts)
        if len(data) != member.size:
            raise BackupDamaged('%s is shorter than recorded' % member.name)
        if digest:
            self.digests[member.name] = digest_bytes(data)
        return data

    def _stream(self, member, entry):
        regions = entry_regions(entry)
        if member.regions != regions:
            raise BackupDamaged('the sparse map of %s differs from the manifest: damaged' % member.name)
        digest = ContentDigest(member.size)
        writer = self.writers.get(member.name)
        for pos, buf, count in self.source.read(member, self._acquire):
            digest.update(pos, buf, count)
            if writer is not None:
                self.pipe.submit(writer.write, (pos, buf, count), buf)
            else:
                self._release(buf)
            self.data_size += count
        self.digests[member.name] = digest.hexdigest()

    # -- results ------------------------------------------------------------

    def summary(self):
        manifest = self.manifest
        digests = self.checksums['sha256']
        return dict(
            path=self.src,
            format=self.source.kind,
            compressed=getattr(self.source, 'compressed', False),
            format_version=manifest['format_version'],
            name=manifest['name'],
            created=manifest['created'],
            domain=manifest['domain']['name'],
            uuid=manifest['domain']['uuid'],
            libvirt_version=(manifest.get('host') or {}).get('libvirt'),
            qemu_version=(manifest.get('host') or {}).get('qemu'),
            files=[dict(name=e['name'], role=e['role'], path=e.get('path'), size=e['size'],
                        sparse=e.get('map') is not None, sha256=digests[e['name']]) for e in manifest['files']],
            snapshots=list(manifest['snapshots']['order']),
            current_snapshot=manifest['snapshots'].get('current'),
            data_size=self.data_size,
            manifest_sha256=digests[MANIFEST],
        )


def _check_domain_param(params, manifest):
    wanted = params.get('domain')
    if wanted and wanted not in (manifest['domain']['name'], manifest['domain']['uuid']):
        raise InvalidInput("backup %s holds domain '%s' (uuid %s), not '%s': check src or domain"
                           % (params['src'], manifest['domain']['name'], manifest['domain']['uuid'], wanted))


def _check_read_options(params):
    for key in ('dest', 'keep'):
        if params.get(key) is not None:
            raise InvalidInput('%s only applies to state present' % key)
    if params['state'] == 'verified':
        if params.get('disk_dir') is not None or params.get('force') or params.get('start'):
            raise InvalidInput('disk_dir, force and start only apply to state restored')


def verify_backup(params, check_mode=False):
    """vm_backup state=verified: read everything, change nothing."""
    _check_read_options(params)
    started = time.monotonic()
    reading = Reading(params['src']).run()
    _check_domain_param(params, reading.manifest)
    duration = time.monotonic() - started
    summary = reading.summary()
    summary.update(duration=round(duration, 3),
                   throughput=int(reading.data_size / duration) if duration > 0 else None)
    return dict(changed=False, verified=summary)


# --------------------------------------------------------------------------
# state=restored
# --------------------------------------------------------------------------

class StagedFile:
    """A restored file written under a temporary name beside its destination."""

    def __init__(self, final, entry):
        self.final = final
        self.entry = entry
        directory, base = os.path.split(final)
        self.path = os.path.join(directory, '.%s%s%s' % (base, RESTORING, secrets.token_hex(4)))
        self.fd = create_file(self.path)
        try_lock(self.fd)
        self.writer = SparseWriter(self.fd)

    def write(self, offset, buf, count):
        self.writer.write(offset, buf, count)

    def finish(self):
        os.ftruncate(self.fd, self.entry['size'])
        mode = int(self.entry.get('mode') or '0600', 8) & 0o777
        if os.geteuid() == 0 and isinstance(self.entry.get('uid'), int) and isinstance(self.entry.get('gid'), int):
            os.fchown(self.fd, self.entry['uid'], self.entry['gid'])
        os.fchmod(self.fd, mode)
        os.fsync(self.fd)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def discard(self):
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


UNDEFINE_FLAGS = ('VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA', 'VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA',
                  'VIR_DOMAIN_UNDEFINE_KEEP_NVRAM', 'VIR_DOMAIN_UNDEFINE_KEEP_TPM', 'VIR_DOMAIN_UNDEFINE_MANAGED_SAVE')


def _undefine_flags():
    flags = 0
    for name in UNDEFINE_FLAGS:
        flags |= getattr(libvirt, name, 0)
    return flags


class Restorer:
    """Plans a restore once the manifest is in, stages every file, then commits it in one go."""

    def __init__(self, conn, params, check_mode):
        self.conn = conn
        self.params = params
        self.check_mode = check_mode
        self.staged = {}
        self.dest = {}           # member name -> destination path
        self.created_dirs = []
        self.existing = None     # the domain being replaced (force)
        self.domain_xml = None
        self.snapshot_xml = []   # (name, xml) in topological order
        self.rebase = []         # (staged member name, new backing path, backing format)
        self.manifest = None

    # -- planning (before any byte is written) ----------------------------

    def prepare(self, manifest, small):
        self.manifest = manifest
        _check_domain_param(self.params, manifest)
        name = manifest['domain']['name']
        uuid = manifest['domain']['uuid']
        by_name = {entry['name']: entry for entry in manifest['files']}
        domain_entry = next(e for e in manifest['files'] if e['role'] == 'domain')
        try:
            xml = small[domain_entry['name']].decode('utf-8', 'strict')
            root = parse_xml(xml)
            snapshots = {}
            for entry in manifest['files']:
                if entry['role'] == 'snapshot':
                    snapshots[entry['snapshot']] = small[entry['name']].decode('utf-8', 'strict')
                    parse_xml(snapshots[entry['snapshot']])
        except (UnicodeDecodeError, etree.XMLSyntaxError) as exc:
            raise BackupDamaged('an XML file in it is damaged (%s)' % one_line(exc)) from None
        if root.findtext('name') != name or (root.findtext('uuid') or '').lower() != uuid.lower():
            raise BackupDamaged('its domain.xml does not describe the domain the manifest names')
        self._plan_destinations(manifest, by_name, xml, snapshots)
        mapping = {entry['path']: self.dest[entry['name']] for entry in manifest['files']
                   if entry['role'] in DISK_ROLES and self.dest[entry['name']] != entry['path']}
        self.domain_xml = rewrite_paths(xml, mapping)
        self.snapshot_xml = [(snap, rewrite_paths(snapshots[snap], mapping)) for snap in manifest['snapshots']['order']]
        self._check_libvirt(name, uuid)
        self._check_files(manifest)
        if self.check_mode:
            return {}
        try:
            self._make_parent_dirs(manifest)
            for entry in manifest['files']:
                if entry['role'] in FILE_ROLES:
                    final = self.dest[entry['name']]
                    remove_stale(os.path.dirname(final),
                                 re.compile(r'^\.%s%s[0-9a-f]+$' % (re.escape(os.path.basename(final)),
                                                                    re.escape(RESTORING))))
                    self.staged[entry['name']] = StagedFile(final, entry)
        except OSError as exc:
            self.discard()
            where = exc.filename or 'the destination'
            raise OperationFailed('cannot write next to %s: %s' % (where, exc.strerror)) from None
        return self.staged

    def _plan_destinations(self, manifest, by_name, xml, snapshots):
        disk_dir = self.params.get('disk_dir')
        if disk_dir is not None:
            if not os.path.isabs(disk_dir):
                raise InvalidInput('disk_dir must be an absolute path, got %r' % disk_dir)
            if not os.path.isdir(disk_dir):
                raise InvalidInput('disk_dir %s does not exist: create it first (mode 0711 or so, so that QEMU can '
                                   'reach the images)' % disk_dir)
            disk_dir = os.path.realpath(disk_dir)
        referenced = set(referenced_files(xml))
        for snap_xml in snapshots.values():
            referenced.update(referenced_files(snap_xml))
        backing_targets = {entry['backing'] for entry in manifest['files'] if entry.get('backing')}
        used = set()
        uuid = manifest['domain']['uuid']
        nvram_default = os.path.join(NVRAM_DIR, '%s_VARS.fd' % manifest['domain']['name'])
        root = parse_xml(xml)
        nvram_el = root.find('os/nvram')
        nvram_path = nvram_el.text.strip() if nvram_el is not None and nvram_el.text else nvram_default
        for entry in manifest['files']:
            role = entry['role']
            if role in XML_ROLES:
                continue
            path = entry['path']
            if role in DISK_ROLES:
                if path not in referenced and entry['name'] not in backing_targets:
                    raise BackupDamaged('%s would be restored to %s, which neither the domain nor a snapshot uses'
                                        % (entry['name'], path))
                if disk_dir is not None:
                    base = os.path.basename(path)
                    target = os.path.join(disk_dir, base)
                    counter = 1
                    while target in used:
                        target = os.path.join(disk_dir, '%d-%s' % (counter, base))
                        counter += 1
                    path = target
            elif role == 'nvram':
                if path != nvram_path:
                    raise BackupDamaged('its NVRAM would go to %s, but the domain uses %s' % (path, nvram_path))
                if os.path.dirname(os.path.normpath(path)) != NVRAM_DIR:
                    # the path comes from the backup's own XML: never let it write a file anywhere
                    raise BackupDamaged("its NVRAM would go to %s, outside libvirt's NVRAM directory %s: restore "
                                        "only backups made by vm_backup of domains whose NVRAM lives there"
                                        % (path, NVRAM_DIR))
            elif role == 'tpm':
                if not path.startswith(os.path.join(SWTPM_DIR, uuid) + '/'):
                    raise BackupDamaged('its TPM state would go to %s, outside %s' % (path, os.path.join(SWTPM_DIR, uuid)))
            if path in used:
                raise BackupDamaged('two files would be restored to %s' % path)
            used.add(path)
            self.dest[entry['name']] = path
        # Backing files that move: each image must find its backing at the new place.
        for entry in manifest['files']:
            backing = entry.get('backing')
            if not backing or entry.get('format') != 'qcow2':
                continue
            new_backing = self.dest[backing]
            old_ref = entry.get('backing_file') or ''
            resolved = old_ref if old_ref.startswith('/') else \
                os.path.normpath(os.path.join(os.path.dirname(self.dest[entry['name']]), old_ref))
            if resolved != new_backing:
                self.rebase.append((entry['name'], new_backing, by_name[backing].get('format') or 'raw'))

    def _check_libvirt(self, name, uuid):
        existing = None
        try:
            existing = self.conn.lookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise translate(exc, "domain '%s'" % name) from None
        try:
            same_uuid = self.conn.lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise translate(exc, "domain uuid %s" % uuid) from None
            same_uuid = None
        if same_uuid is not None and same_uuid.name() != name:
            raise InvalidInput("domain '%s' already has the UUID %s of the backed-up domain '%s': undefine it "
                               "first, or restore on another host" % (same_uuid.name(), uuid, name))
        if existing is not None:
            state = domain_state(existing)
            if state != 'shutoff':
                raise InvalidInput("domain '%s' exists and is %s: shut it down first; force never replaces a "
                                   "running domain" % (name, state))
            if not self.params.get('force'):
                raise InvalidInput("domain '%s' already exists: set force: true to replace it (it must be shut off), "
                                   "or undefine it first" % name)
            self.existing = existing
        self.others = {}
        for dom in self.conn.listAllDomains(0):
            if dom.name() == name:
                continue
            try:
                other_root = parse_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
            except libvirt.libvirtError:
                continue
            for disk in domain_disks(other_root):
                if disk['path']:
                    self.others[disk['path']] = dom.name()
            nvram = other_root.find('os/nvram')
            if nvram is not None and nvram.text:
                self.others[nvram.text.strip()] = dom.name()

    def _check_files(self, manifest):
        force = self.params.get('force')
        needs = {}
        for entry in manifest['files']:
            if entry['role'] not in FILE_ROLES:
                continue
            final = self.dest[entry['name']]
            if final in self.others:
                raise InvalidInput("%s belongs to domain '%s': restore with disk_dir to put the disks elsewhere"
                                   % (final, self.others[final]))
            if os.path.lexists(final):
                info = os.lstat(final)
                if not stat.S_ISREG(info.st_mode):
                    raise InvalidInput('%s exists and is not a regular file: move it away first' % final)
                if not force:
                    raise InvalidInput('%s already exists: set force: true to replace it, restore with disk_dir, '
                                       'or move it away first' % final)
            parent = os.path.dirname(final)
            if entry['role'] in DISK_ROLES and not os.path.isdir(parent):
                raise InvalidInput('directory %s for %s does not exist: create it, or restore with disk_dir'
                                   % (parent, entry['name']))
            anchor = _existing_parent(parent)
            dev = os.stat(anchor).st_dev
            data = sum(length for _off, length in entry_regions(entry))
            needs.setdefault(dev, [anchor, 0])[1] += data
        for anchor, data in needs.values():
            free = _free_bytes(anchor)
            if free < data:
                raise OperationFailed('not enough space in %s to restore: needs %s, %s free: free space or restore '
                                      'with disk_dir elsewhere' % (anchor, human_size(data), human_size(free)))

    def _make_parent_dirs(self, manifest):
        tpm_dirs = {d['path']: d for d in manifest.get('tpm_dirs') or [] if isinstance(d, dict)
                    and isinstance(d.get('path'), str)}
        for entry in manifest['files']:
            if entry['role'] not in ('nvram', 'tpm'):
                continue
            missing = []
            parent = os.path.dirname(self.dest[entry['name']])
            while not os.path.isdir(parent):
                missing.append(parent)
                parent = os.path.dirname(parent)
            for directory in reversed(missing):
                if entry['role'] == 'tpm' and not directory.startswith(SWTPM_DIR):
                    raise BackupDamaged('its TPM state would create %s' % directory)
                spec = tpm_dirs.get(directory, {})
                mode = int(spec.get('mode') or '0711', 8) & 0o777
                os.mkdir(directory, mode)
                os.chmod(directory, mode)
                if os.geteuid() == 0 and isinstance(spec.get('uid'), int) and isinstance(spec.get('gid'), int):
                    os.chown(directory, spec['uid'], spec['gid'])
                self.created_dirs.append(directory)

    # -- commit (after everything checked out) -----------------------------

    def discard(self):
        for staged in self.staged.values():
            staged.discard()
        for directory in reversed(self.created_dirs):
            try:
                os.rmdir(directory)
            except OSError:
                pass

    def commit(self):
        for member, backing, fmt in self.rebase:
            staged = self.staged[member]
            staged.close()
            proc = subprocess.run(['qemu-img', 'rebase', '-u', '-f', 'qcow2', '-F', fmt, '-b', backing, staged.path],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise OperationFailed('qemu-img rebase of %s failed: %s' % (staged.final, one_line(proc.stderr)))
        old_xml = old_snaps = None
        if self.existing is not None:
            old_xml = self.existing.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE)
            old_tree = SnapshotTree.from_domain(self.existing, secure=True)
            old_snaps = [(n, old_tree.by_name[n].xml, old_tree.by_name[n].is_current) for n in old_tree.topological()]
        moved = []      # (final, aside)
        placed = []
        defined = None
        saved = []      # the old definition, then its snapshots'
        try:
            if self.existing is not None:
                if domain_state(self.existing) != 'shutoff':
                    raise InvalidInput("domain '%s' was started meanwhile: shut it down and run again"
                                       % self.existing.name())
                # Should this process die from here on, the definition it undefines stays on disk
                # beside the disks it sets aside, and the next restore names them all.
                saved = self._save_old_xml(old_xml, old_snaps)
                self.existing.undefineFlags(_undefine_flags())
            for staged in self.staged.values():
                staged.close()
                if os.path.lexists(staged.final):
                    directory, base = os.path.split(staged.final)
                    aside = os.path.join(directory, '.%s%s%s' % (base, REPLACED, secrets.token_hex(4)))
                    os.rename(staged.final, aside)
                    moved.append((staged.final, aside))
                    test_pause('restore-commit')
                os.rename(staged.path, staged.final)
                placed.append(staged.final)
            for directory in {os.path.dirname(p) for p in placed}:
                fsync_dir(directory)
            defined = self.conn.defineXML(self.domain_xml)
            current = self.manifest['snapshots'].get('current')
            for snap, xml in self.snapshot_xml:
                redefine_snapshot(defined, xml, snap == current)
            if self.manifest['domain'].get('autostart'):
                defined.setAutostart(1)
        except BaseException as exc:
            left = self._roll_back(defined, placed, moved, old_xml, old_snaps)
            if None not in left:
                for path in saved:
                    _unlink_quietly(path)
            if left:
                # Not all is back: keep what could not be put back, and say where it is.
                text = 'the restore was only partly rolled back: ' + '; '.join(
                    ("domain '%s' could not be defined again: its old definition and snapshots are kept in %s "
                     "('virsh define' the first, then 'virsh snapshot-create --redefine' the others in order, "
                     "--current for the one marked current)" % (self.existing.name(), ', '.join(saved))
                     if saved else "domain '%s' could not be defined again" % self.existing.name())
                    if entry is None else
                    ('%s could not be renamed back to %s: rename it by hand' % entry) for entry in left)
                note_undone(exc, text)
                if isinstance(exc, (libvirt.libvirtError, OSError)):
                    cause = translate(exc) if isinstance(exc, libvirt.libvirtError) else exc
                    raise OperationFailed('restore failed (%s), and %s' % (cause, text)) from None
                raise
            if self.existing is not None:
                note_undone(exc, "the restore was rolled back: domain '%s' and its files are as they were"
                            % self.existing.name())
            else:
                note_undone(exc, 'the restore was rolled back: its files were removed')
            if isinstance(exc, libvirt.libvirtError):
                raise OperationFailed('restore failed and was rolled back (the previous domain and files, if any, are '
                                      'back): %s' % translate(exc)) from None
            if isinstance(exc, OSError):
                raise OperationFailed('restore failed and was rolled back (the previous domain and files, if any, are '
                                      'back): %s' % exc) from None
            raise
        for _final, aside in moved:
            _unlink_quietly(aside)
        for path in saved:
            _unlink_quietly(path)
        return defined

    def _save_old_xml(self, old_xml, old_snaps):
        """Write the definition about to be undefined, and its snapshots' (numbered parents first, the
        current one marked), beside the disks: the paths, domain first."""
        first = next(iter(self.staged.values()), None)
        if first is None:
            return []
        directory = os.path.dirname(first.final)
        label = safe_label(self.existing.name())
        token = secrets.token_hex(4)
        files = [('.%s.xml%s%s' % (label, REPLACED, token), old_xml)]
        for index, (name, xml, is_current) in enumerate(old_snaps, 1):
            mark = '-current' if is_current else ''
            files.append(('.%s.snapshot-%03d-%s%s.xml%s%s' % (label, index, safe_label(name), mark, REPLACED, token),
                          xml))
        paths = []
        for base, text in files:
            path = os.path.join(directory, base)
            fd = create_file(path)
            paths.append(path)
            try:
                write_all(fd, text.encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(directory)
        return paths

    def _roll_back(self, defined, placed, moved, old_xml, old_snaps):
        """Undo a failed commit: what it could not undo, ``None`` first for the old definition, then ``(aside, final)``."""
        left = []
        try:
            if defined is not None:
                defined.undefineFlags(_undefine_flags())
        except libvirt.libvirtError:
            pass
        for path in placed:
            try:
                os.unlink(path)
            except OSError:
                pass
        for final, aside in moved:
            try:
                os.rename(aside, final)
            except OSError:
                left.append((aside, final))
        for staged in self.staged.values():
            staged.discard()
        if old_xml is not None:
            try:
                old = self.conn.defineXML(old_xml)
                for _name, xml, is_current in old_snaps:
                    redefine_snapshot(old, xml, is_current)
            except libvirt.libvirtError:
                left.insert(0, None)
        return left


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def restore_backup(params, check_mode=False):
    """vm_backup state=restored: verify all, stage all, then swap in and define."""
    _check_read_options(params)
    started = time.monotonic()
    with Connection(params['uri']) as conn:
        restorer = Restorer(conn, params, check_mode)
        reading = Reading(params['src'], restorer)
        try:
            reading.run()
        except BaseException:
            restorer.discard()
            raise
        summary = reading.summary()
        manifest = reading.manifest

        def mode_owner(spec, default_mode):
            # the mode and owner the restore gives a file or directory (StagedFile, _make_parent_dirs)
            owned = isinstance(spec.get('uid'), int) and isinstance(spec.get('gid'), int)
            return dict(mode='%04o' % (int(spec.get('mode') or default_mode, 8) & 0o777),
                        uid=spec['uid'] if owned else None, gid=spec['gid'] if owned else None)

        files = [dict(name=e['name'], role=e['role'], path=restorer.dest.get(e['name']), size=e['size'],
                      sha256=summary['files'][i]['sha256'], **mode_owner(e, '0600'))
                 for i, e in enumerate(manifest['files']) if e['role'] in FILE_ROLES]
        tpm_state = os.path.join(SWTPM_DIR, manifest['domain']['uuid'])
        directories = [dict(path=d['path'], **mode_owner(d, '0711')) for d in manifest.get('tpm_dirs') or []
                       if isinstance(d, dict) and isinstance(d.get('path'), str)
                       and os.path.normpath(d['path']) == d['path']
                       and (d['path'] == tpm_state or d['path'].startswith(tpm_state + '/'))]
        by_snapshot = {e['snapshot']: e['name'] for e in manifest['files'] if e['role'] == 'snapshot'}
        snapshot_files = [dict(name=by_snapshot[snap], snapshot=snap, current=snap == summary['current_snapshot'])
                          for snap in summary['snapshots']]
        restored = dict(src=params['src'], domain=summary['domain'], uuid=summary['uuid'],
                        backup_created=summary['created'], files=files, directories=directories,
                        definition_file=next(e['name'] for e in manifest['files'] if e['role'] == 'domain'),
                        snapshot_files=snapshot_files, autostart=bool(manifest['domain'].get('autostart')),
                        snapshots=summary['snapshots'],
                        current_snapshot=summary['current_snapshot'], replaced=restorer.existing is not None,
                        disk_dir=params.get('disk_dir'), started=False, data_size=reading.data_size)
        result = dict(changed=True)
        names = {restorer.manifest['domain']['name']} | ({restorer.existing.name()} if restorer.existing else set())
        leftovers = set_aside_leftovers(restorer.dest.values(), names)
        if leftovers:
            restored['set_aside'] = leftovers
            result['warnings'] = ['found %d file(s) that an interrupted restore set aside and never put back: %s: '
                                  'they hold what it replaced (disk images; the .xml is the domain definition '
                                  "it undefined, 'virsh define' takes it; the .snapshot-NNN-*.xml are its "
                                  "snapshots, parents first, for 'virsh snapshot-create --redefine', --current for "
                                  "the one marked -current): keep what you need, then delete them"
                                  % (len(leftovers), ', '.join(leftovers))]
        if check_mode:
            restored.update(duration=round(time.monotonic() - started, 3))
            result.update(restored=restored)
            return result
        try:
            dom = restorer.commit()
        except BaseException:
            restorer.discard()
            raise
        if params.get('start'):
            try:
                dom.create()
            except libvirt.libvirtError as exc:
                restored.update(duration=round(time.monotonic() - started, 3))
                raise OperationFailed("domain '%s' was restored, but starting it failed: %s: fix that and start it "
                                      "('virsh start %s')" % (summary['domain'], translate(exc), summary['domain']),
                                      changed=True, restored=restored) from None
            restored['started'] = True
        duration = time.monotonic() - started
        restored.update(duration=round(duration, 3),
                        throughput=int(reading.data_size / duration) if duration > 0 else None)
        result.update(restored=restored)
        return result


def os_error_text(exc, doing, dest=None, way_out='choose another place'):
    """One line for an ``OSError``, naming where (``dest``, else the file) and the way out."""
    where = ' in %s' % dest if dest else (' (%s)' % exc.filename if exc.filename else '')
    if no_space(exc):
        return 'no space left%s while %s: free space, or %s, and run again' % (where, doing, way_out)
    if isinstance(exc, PermissionError):
        return 'permission denied%s while %s: run as root (become: true), or %s' % (where, doing, way_out)
    if exc.errno == errno.EROFS:
        return 'Read-only file system%s while %s: %s, or remount it read-write' % (where, doing, way_out)
    return '%s%s while %s: %s' % (exc.strerror or exc, where, doing, way_out)


def run(params, check_mode=False):
    """The whole of vm_backup for its module parameters."""
    state = params['state']
    doing, way_out = {'present': ('backing up', 'choose another dest'),
                      'verified': ('verifying the backup', 'check src'),
                      'restored': ('restoring (nothing was changed)', 'choose another disk_dir')}[state]
    try:
        if state == 'present':
            return make_backup(params, check_mode)
        if state == 'verified':
            return verify_backup(params, check_mode)
        return restore_backup(params, check_mode)
    except OSError as exc:
        raise OperationFailed(os_error_text(exc, doing, way_out=way_out)) from None
