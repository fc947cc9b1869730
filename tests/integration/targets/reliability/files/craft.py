# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Make damaged and hostile vm_backup backups for the reliability tests.

    craft.py DIR_BACKUP EFI_DIR_BACKUP OUTDIR OTHER_DISK ESCAPE_DIR

DIR_BACKUP and EFI_DIR_BACKUP are backups made with format=directory. Every
archive is rebuilt the way vm_backup lays one out (manifest first, checksum list
last) with every digest recomputed, so that a backup is refused for the one
flaw put in it, not for a checksum the flaw happened to break. ``good.tar.zst``
is rebuilt with no flaw at all: it must verify, which proves the others are
refused for their flaw.

Written into OUTDIR: good.tar.zst, flipped-zstd.tar.zst, flipped-data.tar.zst,
truncated.tar.zst, newer.tar.zst, dotdot.tar.zst, dotdot-manifest.tar.zst,
absolute.tar.zst, symlink.tar.zst, hardlink.tar.zst, otherdisk.tar.zst,
nvram-escape.tar.zst, not-ours.tar.zst, and the directories dir-symlink,
dir-flipped, dir-incomplete. Hostile paths point into ESCAPE_DIR.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile

PIECE = 64 << 10


def digest(data):
    top = hashlib.sha256()
    for pos in range(0, len(data), PIECE):
        top.update(hashlib.sha256(data[pos:pos + PIECE]).digest())
    return top.hexdigest()


def load(backup):
    """``(top name, {relative name: bytes})`` of a directory backup, manifest parsed."""
    files = {}
    for base, _dirs, names in os.walk(backup):
        for name in names:
            full = os.path.join(base, name)
            with open(full, 'rb') as handle:
                files[os.path.relpath(full, backup)] = handle.read()
    return os.path.basename(backup.rstrip('/')), files


class Backup:
    """A backup's files in memory, edited and then written as an archive or a directory."""

    def __init__(self, source):
        self.top, self.files = load(source)
        self.manifest = json.loads(self.files['manifest.json'])
        for entry in self.manifest['files']:
            entry.pop('map', None)      # written dense below
            entry['sparse'] = False
        self.extra = []                 # (position after this member name, TarInfo, bytes or None)
        self.replace = {}               # member name -> (TarInfo, None)

    def copy(self):
        clone = Backup.__new__(Backup)
        clone.top = self.top
        clone.files = dict(self.files)
        clone.manifest = json.loads(json.dumps(self.manifest))
        clone.extra = []
        clone.replace = {}
        return clone

    def entry(self, role):
        return next(e for e in self.manifest['files'] if e['role'] == role)

    def rewrite_text(self, old, new):
        """Replace ``old`` by ``new`` in every XML file and every path of the manifest."""
        for entry in self.manifest['files']:
            if entry['name'].endswith('.xml'):
                self.files[entry['name']] = self.files[entry['name']].replace(old.encode(), new.encode())
            if entry.get('path') == old:
                entry['path'] = new

    def name_nvram(self, path):
        """Write the NVRAM path into every ``<os>`` that leaves it to libvirt's default."""
        for entry in self.manifest['files']:
            if entry['role'] in ('domain', 'snapshot'):
                text = self.files[entry['name']].decode()
                if '<nvram' not in text and '</os>' in text:
                    text = text.replace('</os>', '  <nvram>%s</nvram>\n    </os>' % path)
                self.files[entry['name']] = text.encode()

    def _seal(self):
        """Recompute every digest and size: the manifest's and the checksum list's."""
        for entry in self.manifest['files']:
            data = self.files.get(entry['name'], b'')
            entry['size'] = len(data)
            if entry.get('sha256') is not None:
                entry['sha256'] = digest(data)
        raw = json.dumps(self.manifest, indent=1).encode() + b'\n'
        self.files['manifest.json'] = raw
        sums = {'manifest.json': digest(raw)}
        for entry in self.manifest['files']:
            sums[entry['name']] = digest(self.files[entry['name']])
        self.files['checksums.json'] = json.dumps(dict(format=self.manifest['format'], sha256=sums)).encode()

    def order(self):
        names = ['manifest.json'] + [e['name'] for e in self.manifest['files']] + ['checksums.json']
        return names

    def tar(self, seal=True):
        if seal:
            self._seal()
        buf = io.BytesIO()
        made = set()
        with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as out:
            self._add_dir(out, self.top)
            for name in self.order():
                parent = os.path.dirname(name)
                if parent and parent not in made:
                    self._add_dir(out, '%s/%s' % (self.top, parent))
                    made.add(parent)
                if name in self.replace:
                    out.addfile(self.replace[name])
                else:
                    info = tarfile.TarInfo('%s/%s' % (self.top, name))
                    info.size = len(self.files[name])
                    info.mode = 0o600
                    out.addfile(info, io.BytesIO(self.files[name]))
                for after, extra, data in self.extra:
                    if after == name:
                        out.addfile(extra, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()

    @staticmethod
    def _add_dir(out, name):
        info = tarfile.TarInfo(name)
        info.type = tarfile.DIRTYPE
        info.mode = 0o700
        out.addfile(info)

    def directory(self, path):
        self._seal()
        shutil.rmtree(path, ignore_errors=True)
        for name in self.order():
            full = os.path.join(path, name)
            os.makedirs(os.path.dirname(full), mode=0o700, exist_ok=True)
            with open(full, 'wb') as handle:
                handle.write(self.files[name])
            os.chmod(full, 0o600)
        os.chmod(path, 0o700)


def zstd(data):
    return subprocess.run(['zstd', '-q', '-c'], input=data, capture_output=True, check=True).stdout


def save(path, data):
    with open(path, 'wb') as handle:
        handle.write(data)


def main():
    source, efi_source, out, other_disk, escape = sys.argv[1:6]
    os.makedirs(out, exist_ok=True)
    base = Backup(source)
    disk = base.entry('disk')

    good = zstd(base.copy().tar())
    save(os.path.join(out, 'good.tar.zst'), good)
    plain = subprocess.run(['zstd', '-q', '-d', '-c'], input=good, capture_output=True, check=True).stdout

    # One byte flipped in the compressed stream, where it really changes what comes out.
    for offset in range(len(good) // 2, len(good)):
        flipped = bytearray(good)
        flipped[offset] ^= 0x01
        check = subprocess.run(['zstd', '-q', '-d', '-c'], input=bytes(flipped), capture_output=True, check=False)
        if check.returncode != 0 or check.stdout != plain:
            break
    save(os.path.join(out, 'flipped-zstd.tar.zst'), bytes(flipped))

    # One byte flipped in the disk image itself, the archive sealed before: zstd is happy, the digest is not.
    bad = base.copy()
    sealed = bad.tar()  # seals the true digests into manifest and checksum list
    data = bytearray(bad.files[disk['name']])
    data[len(data) // 3] ^= 0x01
    bad.files[disk['name']] = bytes(data)
    save(os.path.join(out, 'flipped-data.tar.zst'), zstd(bad.tar(seal=False)))
    del sealed

    save(os.path.join(out, 'truncated.tar.zst'), good[:len(good) // 2])

    newer = base.copy()
    newer.manifest['format_version'] = 2
    save(os.path.join(out, 'newer.tar.zst'), zstd(newer.tar()))

    dotdot = base.copy()
    info = tarfile.TarInfo('%s/../kvmsnap-it-rel-evil' % dotdot.top)
    info.size = 5
    dotdot.extra.append(('domain.xml', info, b'evil\n'))
    save(os.path.join(out, 'dotdot.tar.zst'), zstd(dotdot.tar()))

    dotdot_manifest = base.copy()
    entry = dotdot_manifest.entry('disk')
    old_name = entry['name']
    entry['name'] = 'disks/../../kvmsnap-it-rel-evil'
    dotdot_manifest.files[entry['name']] = dotdot_manifest.files.pop(old_name)
    save(os.path.join(out, 'dotdot-manifest.tar.zst'), zstd(dotdot_manifest.tar()))

    absolute = base.copy()
    info = tarfile.TarInfo(os.path.join(escape, 'evil-absolute'))
    info.size = 5
    absolute.extra.append(('domain.xml', info, b'evil\n'))
    save(os.path.join(out, 'absolute.tar.zst'), zstd(absolute.tar()))

    symlink = base.copy()
    info = tarfile.TarInfo('%s/%s' % (symlink.top, disk['name']))
    info.type = tarfile.SYMTYPE
    info.linkname = os.path.join(escape, 'evil-link')
    symlink.replace[disk['name']] = info
    save(os.path.join(out, 'symlink.tar.zst'), zstd(symlink.tar()))

    hardlink = base.copy()
    info = tarfile.TarInfo('%s/%s' % (hardlink.top, disk['name']))
    info.type = tarfile.LNKTYPE
    info.linkname = '/etc/passwd'
    hardlink.replace[disk['name']] = info
    save(os.path.join(out, 'hardlink.tar.zst'), zstd(hardlink.tar()))

    other = base.copy()
    other.rewrite_text(disk['path'], other_disk)
    save(os.path.join(out, 'otherdisk.tar.zst'), zstd(other.tar()))

    efi = Backup(efi_source)
    nvram = efi.entry('nvram')
    evil_nvram = os.path.join(escape, 'nvram', os.path.basename(nvram['path']))
    efi.name_nvram(nvram['path'])  # libvirt's default path, written out, so that it can be rewritten
    efi.rewrite_text(nvram['path'], evil_nvram)
    save(os.path.join(out, 'nvram-escape.tar.zst'), zstd(efi.tar()))

    # A valid tar.zst, just not ours.
    foreign = io.BytesIO()
    with tarfile.open(fileobj=foreign, mode='w', format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo('etc/hostname')
        info.size = 5
        tar.addfile(info, io.BytesIO(b'host\n'))
    save(os.path.join(out, 'not-ours.tar.zst'), zstd(foreign.getvalue()))

    # Directory backups: a disk replaced by a symlink to a copy outside (same bytes, so only
    # the link is wrong), one flipped byte, and no checksum list (an interrupted backup).
    link_dir = os.path.join(out, 'dir-symlink')
    base.copy().directory(link_dir)
    outside = os.path.join(escape, 'evil-dir-link')
    os.makedirs(escape, exist_ok=True)
    shutil.copyfile(os.path.join(link_dir, disk['name']), outside)
    os.unlink(os.path.join(link_dir, disk['name']))
    os.symlink(outside, os.path.join(link_dir, disk['name']))

    flip_dir = os.path.join(out, 'dir-flipped')
    base.copy().directory(flip_dir)
    with open(os.path.join(flip_dir, disk['name']), 'r+b') as handle:
        handle.seek(disk['size'] // 3 if disk['size'] else 0)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0x01]))

    partial_dir = os.path.join(out, 'dir-incomplete')
    base.copy().directory(partial_dir)
    os.unlink(os.path.join(partial_dir, 'checksums.json'))


if __name__ == '__main__':
    main()
