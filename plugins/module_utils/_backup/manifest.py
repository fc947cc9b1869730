# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The manifest, a typed value: what a backup holds and where it came from, serialised and parsed here only.

The manifest is the backup's first member (``manifest.json``) and the checksum list
its last (``checksums.json``). Both are written by ``to_bytes`` and read back by
``from_bytes``, which validates everything before any reader trusts a field.

A file's digest is the piecewise SHA-256 of digest.py (the SHA-256 of its 64 KiB pieces'
SHA-256s), not what ``sha256sum`` prints for the file: its key is ``piecewise_sha256``.
Manifests and checksum lists written before called it ``sha256``; they still read.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import List, Optional

from .digest import DIGEST
from .errors import BackupDamaged
from .files import dense
from .members import check_absolute, check_relative

FORMAT = 'kvm.snapshots.vm_backup'
FORMAT_VERSION = 1
MANIFEST = 'manifest.json'
CHECKSUMS = 'checksums.json'
SMALL_LIMIT = 64 << 20      # XML and JSON members are read into memory up to this size
MAP_LIMIT = 1 << 22         # regions in one sparse map

DISK_ROLES = ('disk', 'backing', 'snapshot-disk', 'memory')
FILE_ROLES = DISK_ROLES + ('nvram', 'tpm')
XML_ROLES = ('domain', 'snapshot')
ROLES = XML_ROLES + FILE_ROLES

KEYS = ('format', 'format_version', 'name', 'created', 'domain', 'files', 'snapshots')
NAME_RULES = {
    'domain': re.compile(r'^domain\.xml$'),
    'snapshot': re.compile(r'^snapshots/\d{4,}\.xml$'),
    'nvram': re.compile(r'^nvram/[^/]+$'),
    'tpm': re.compile(r'^tpm/.+$'),
}
DISK_NAME = re.compile(r'^disks/[^/]+$')
SHA256 = re.compile(r'^[0-9a-f]{64}$')
DIGEST_KEY = 'piecewise_sha256'     # a file's digest (digest.py), in the manifest and the checksum list
OLD_DIGEST_KEY = 'sha256'           # what manifests and checksum lists written before called it
MODE = re.compile(r'^[0-7]{3,4}$')


class ModeOwner:
    """The mode and owner a restore gives what it writes: the recorded ones, else a default mode and root's."""

    DEFAULT_MODE = '0600'

    def applied_mode(self):
        return int(self.mode or self.DEFAULT_MODE, 8) & 0o777

    def owner(self):
        """``(uid, gid)`` when both were recorded, else None."""
        return (self.uid, self.gid) if isinstance(self.uid, int) and isinstance(self.gid, int) else None

    def mode_owner(self):
        """The mode (octal text) and owner, as vm_backup reports them."""
        owner = self.owner() or (None, None)
        return dict(mode='%04o' % self.applied_mode(), uid=owner[0], gid=owner[1])


@dataclasses.dataclass
class FileEntry(ModeOwner):
    """One file of a backup: its member name, its role, and for a copied file where it came from."""

    name: str
    role: str
    size: int
    path: Optional[str] = None          # absolute path on the host (every role but domain and snapshot)
    mode: Optional[str] = None          # '0600'
    uid: Optional[int] = None
    gid: Optional[int] = None
    target: Optional[str] = None        # the disk's target device (vda)
    snapshot: Optional[str] = None      # the snapshot it belongs to
    format: Optional[str] = None        # image format (qcow2, raw)
    backing: Optional[str] = None       # member name of its backing image
    backing_file: Optional[str] = None  # the backing reference written in the image
    backing_format: Optional[str] = None
    piecewise_sha256: Optional[str] = None  # of the XML files, so that a restore can trust them early
    map: Optional[list] = None          # data regions [[offset, length]] of a file with holes
    sparse: Optional[bool] = None
    source: Optional[str] = None        # what the domain names: None a file, 'block' a device, 'volume' a pool volume
    volume: Optional[dict] = None       # a volume's pool, name, format, capacity and pool_type (source 'volume')

    @property
    def regions(self):
        """The data regions as ``[(offset, length)]``."""
        return dense(self.size) if self.map is None else normalise_regions(self.map, self.size)

    def to_dict(self):
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)
                if getattr(self, field.name) is not None}


@dataclasses.dataclass
class DirectoryEntry(ModeOwner):
    """A directory the restore creates as it was (the TPM state's)."""

    DEFAULT_MODE = '0711'

    path: str
    mode: Optional[str] = None
    uid: Optional[int] = None
    gid: Optional[int] = None


@dataclasses.dataclass
class Manifest:
    """What a backup holds: the domain, its files in order, its snapshots parents first."""

    name: str
    created: str                        # ISO 8601, UTC, to the second
    domain: dict                        # name, uuid, state, autostart
    files: List[FileEntry]
    order: List[str]                    # snapshot names, parents first
    current: Optional[str] = None
    created_epoch: Optional[int] = None
    host: dict = dataclasses.field(default_factory=dict)       # libvirt, qemu, hostname
    options: dict = dataclasses.field(default_factory=dict)    # the vm_backup options that made it
    tpm_dirs: List[DirectoryEntry] = dataclasses.field(default_factory=list)
    format_version: int = FORMAT_VERSION

    @property
    def domain_name(self):
        return self.domain['name']

    @property
    def uuid(self):
        return self.domain['uuid']

    def entry(self, name):
        return next(entry for entry in self.files if entry.name == name)

    def to_bytes(self):
        data = dict(format=FORMAT, format_version=self.format_version, name=self.name, created=self.created,
                    created_epoch=self.created_epoch, digest=DIGEST, domain=self.domain, host=self.host,
                    options=self.options, files=[entry.to_dict() for entry in self.files],
                    snapshots=dict(order=self.order, current=self.current),
                    tpm_dirs=[dataclasses.asdict(d) for d in self.tpm_dirs])
        return json.dumps(data, indent=1).encode() + b'\n'

    @classmethod
    def from_bytes(cls, data):
        """The manifest in ``data``; ``BackupDamaged`` unless it is one this collection can read."""
        try:
            raw = json.loads(data)
        except ValueError:
            raise BackupDamaged('its %s is damaged (not valid JSON)' % MANIFEST) from None
        check_manifest(raw)
        known = {field.name for field in dataclasses.fields(FileEntry)}
        files = [FileEntry(**{k: v for k, v in _current_keys(entry).items() if k in known}) for entry in raw['files']]
        dirs = raw.get('tpm_dirs')   # check_manifest does not look at it: anything but a list counts as none
        tpm_dirs = [DirectoryEntry(path=d['path'], mode=d.get('mode'), uid=d.get('uid'), gid=d.get('gid'))
                    for d in (dirs if isinstance(dirs, list) else []) if isinstance(d, dict)
                    and isinstance(d.get('path'), str) and check_mode_owner(d, 'manifest directory %r' % d['path'])]
        return cls(name=raw['name'], created=raw['created'], domain=raw['domain'], files=files,
                   order=list(raw['snapshots']['order']), current=raw['snapshots'].get('current'),
                   created_epoch=raw.get('created_epoch'), host=raw.get('host') or {},
                   options=raw.get('options') or {}, tpm_dirs=tpm_dirs, format_version=raw['format_version'])


def _current_keys(entry):
    """A file entry with its digest under today's key, also when an older manifest wrote ``sha256``."""
    if entry.get(DIGEST_KEY) is None and entry.get(OLD_DIGEST_KEY) is not None:
        entry = dict(entry, **{DIGEST_KEY: entry[OLD_DIGEST_KEY]})
    return entry


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


def check_mode_owner(spec, what):
    """A recorded mode (octal text) and owner (uid, gid), each optional; True, or ``BackupDamaged``."""
    mode = spec.get('mode')
    if mode is not None and not (isinstance(mode, str) and MODE.match(mode)):
        raise BackupDamaged('%s has a malformed mode %r' % (what, mode))
    for key in ('uid', 'gid'):
        value = spec.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise BackupDamaged('%s has a malformed %s %r' % (what, key, value))
    return True


def _check_entry(entry, seen):
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
    if role in DISK_ROLES and not DISK_NAME.match(name):
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
    for key in (DIGEST_KEY, OLD_DIGEST_KEY):
        if entry.get(key) is not None and not (isinstance(entry[key], str) and SHA256.match(entry[key])):
            raise BackupDamaged('manifest file %r has a malformed %s' % (name, key))
    if entry.get(DIGEST_KEY) is not None and entry.get(OLD_DIGEST_KEY) not in (None, entry[DIGEST_KEY]):
        raise BackupDamaged('manifest file %r has two different digests' % name)
    if role == 'snapshot' and not isinstance(entry.get('snapshot'), str):
        raise BackupDamaged('manifest file %r names no snapshot' % name)
    check_mode_owner(entry, 'manifest file %r' % name)
    _check_source(entry, name)


def _check_source(entry, name):
    """A disk's ``source`` and ``volume`` (added after format version 1 began: both optional, absent for files)."""
    source = entry.get('source')
    if source is None and entry.get('volume') is None:
        return
    if source not in ('block', 'volume') or entry.get('role') not in DISK_ROLES:
        raise BackupDamaged('manifest file %r has an unknown source %r' % (name, source))
    volume = entry.get('volume')
    if source == 'block':
        if volume is not None:
            raise BackupDamaged('manifest file %r is a block device with a volume record' % name)
        return
    if not isinstance(volume, dict) or not all(isinstance(volume.get(k), str) and volume.get(k)
                                               for k in ('pool', 'name')):
        raise BackupDamaged('manifest file %r is a volume without a valid pool and volume name' % name)
    if '/' in volume['name'] or volume['name'] in ('.', '..') or '\x00' in volume['name'] + volume['pool']:
        raise BackupDamaged('manifest file %r names a volume %r that is no file name' % (name, volume['name']))
    capacity = volume.get('capacity')
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 0:
        raise BackupDamaged('manifest file %r is a volume without a valid capacity' % name)
    if volume.get('format') is not None and not isinstance(volume['format'], str):
        raise BackupDamaged('manifest file %r is a volume with a malformed format' % name)


def check_manifest(manifest):
    """Raise ``BackupDamaged`` unless the parsed JSON ``manifest`` is a manifest this collection can read.

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
    missing = [key for key in KEYS if key not in manifest]
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
        _check_entry(entry, seen)
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


def checksums_bytes(digests):
    """The checksum list (``checksums.json``) for ``{member name: piecewise SHA-256}``."""
    return json.dumps({'format': FORMAT, DIGEST_KEY: digests}, indent=1).encode() + b'\n'


def load_checksums(data):
    """The parsed ``checksums.json``; checked against the manifest by ``check_checksums`` once all is read."""
    try:
        return json.loads(data)
    except ValueError:
        raise BackupDamaged('its %s is damaged (not valid JSON)' % CHECKSUMS) from None


def check_checksums(checksums, manifest):
    """``{member: digest}``: a piecewise SHA-256 for the manifest and each of its files, and nothing else.

    The digests are under ``piecewise_sha256``, or ``sha256`` in a list written before.
    """
    key = DIGEST_KEY if isinstance(checksums, dict) and DIGEST_KEY in checksums else OLD_DIGEST_KEY
    if not isinstance(checksums, dict) or checksums.get('format') != FORMAT or not isinstance(checksums.get(key), dict):
        raise BackupDamaged('its %s is not a %s checksum list' % (CHECKSUMS, FORMAT))
    digests = checksums[key]
    if set(digests) != {MANIFEST} | {entry.name for entry in manifest.files}:
        raise BackupDamaged('its %s does not list exactly the files of the manifest' % CHECKSUMS)
    for name, digest in digests.items():
        if not isinstance(digest, str) or not SHA256.match(digest):
            raise BackupDamaged('its %s has a malformed digest for %s' % (CHECKSUMS, name))
    return digests
