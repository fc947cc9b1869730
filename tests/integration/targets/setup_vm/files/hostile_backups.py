# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Damaged and hostile copies of a vm_backup backup, and the refusal each must meet.

    hostile_backups.py --source BACKUP --escape DIR --evil NAME OUTDIR
        [--efi-source BACKUP] [--other-disk PATH --other-domain NAME] [--disk-dir DIR]
    hostile_backups.py --table

The one crafter of the vm_backup target (tasks/damaged.yml) and of the
reliability target (tasks/backup_inputs.yml). CASES below is the one table:
each case's name, how it is made, how it is tried and the refusal vm_backup
must give. BACKUP is a backup made by vm_backup (an archive or a directory).
A case that needs more is made only when it is given: --efi-source (a backup of
a UEFI domain) and --disk-dir for the NVRAM case, --other-disk/--other-domain
(another domain's disk and its name) for the disk-clash case.

Every hostile backup is rebuilt the way vm_backup lays one out (manifest
first, checksum list last) with every digest recomputed, so that it is refused
for the one flaw put in it, not for a checksum the flaw happened to break; the
rebuilt backup with no flaw (good.tar.zst) must verify, or the refusals prove
nothing. The damaged ones (a byte flipped in the zstd stream, the first half)
are cut from BACKUP itself when it is an archive. Hostile paths aim into DIR
(--escape, created; one file is planted there: a copy of the disk that a
symlink points to) or at NAME (--evil) beside the backup's directory.

Prints JSON {"runs": [...], "skipped": [...], "planted": [...]}: one run per
case and state, {id, case, made, args, expect, says, way, unusable}, where
``args`` are vm_backup's arguments (state verified; or restored, with force
over the domain the backup holds, into --disk-dir for the NVRAM case),
``expect`` is failed (a refusal) or ok, and the message must hold every
string of ``says`` (the problem) and of ``way`` (the way out). ``unusable``:
the refusal is vm_backup's one line for a backup it cannot use, ``backup
PATH is unusable: ...: use another backup (nothing was changed)``, whose
beginning and end ``says`` and ``way`` then hold too. ``skipped``: the cases
not made, with the inputs they need; ``planted``: the files put into DIR.
``--table`` prints the runs with the text as the table writes it.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

PIECE = 64 << 10
BOTH = ('verified', 'restored')
UNUSABLE = ('backup %s is unusable: ', 'use another backup (nothing was changed)')


# ---------------------------------------------------------------- the backup in memory

def digest(data):
    """vm_backup's content digest: SHA-256 of the SHA-256s of the 64 KiB pieces."""
    top = hashlib.sha256()
    for pos in range(0, len(data), PIECE):
        top.update(hashlib.sha256(data[pos:pos + PIECE]).digest())
    return top.hexdigest()


def load(backup):
    """``(top name, {relative name: bytes})`` of a backup, an archive (unpacked by GNU tar) or a directory."""
    if os.path.isdir(backup):
        top, files = os.path.basename(backup.rstrip('/')), {}
        for base, _dirs, names in os.walk(backup):
            for name in names:
                full = os.path.join(base, name)
                with open(full, 'rb') as handle:
                    files[os.path.relpath(full, backup)] = handle.read()
        return top, files
    unpacked = tempfile.mkdtemp(prefix='kvmsnap-hostile-')
    try:
        subprocess.run(['tar', '--zstd', '-xf', backup, '-C', unpacked], check=True)
        (top,) = os.listdir(unpacked)
        return load(os.path.join(unpacked, top))
    finally:
        shutil.rmtree(unpacked)


class Backup:
    """A backup's files in memory, edited and then written as an archive or a directory."""

    def __init__(self, source):
        self.top, self.files = load(source)
        self.manifest = json.loads(self.files['manifest.json'])
        for entry in self.manifest['files']:
            entry.pop('map', None)      # written dense below
            entry['sparse'] = False
        self.extra = []                 # (after this member name, TarInfo, bytes or None)
        self.replace = {}               # member name -> TarInfo without data

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

    def seal(self):
        """Recompute every digest and size: the manifest's and the checksum list's."""
        for entry in self.manifest['files']:
            data = self.files.get(entry['name'], b'')
            entry['size'] = len(data)
            for key in ('piecewise_sha256', 'sha256'):  # manifests before issue 14 call it sha256
                if entry.get(key) is not None:
                    entry[key] = digest(data)
        raw = json.dumps(self.manifest, indent=1).encode() + b'\n'
        self.files['manifest.json'] = raw
        sums = {'manifest.json': digest(raw)}
        for entry in self.manifest['files']:
            sums[entry['name']] = digest(self.files[entry['name']])
        key = 'piecewise_sha256' if any('piecewise_sha256' in e for e in self.manifest['files']) else 'sha256'
        self.files['checksums.json'] = json.dumps({'format': self.manifest['format'], key: sums}).encode()

    def order(self):
        return ['manifest.json'] + [e['name'] for e in self.manifest['files']] + ['checksums.json']

    def tar(self, seal=True):
        """The backup as an uncompressed tar stream, sealed first unless ``seal`` is false."""
        if seal:
            self.seal()
        buf = io.BytesIO()
        made = set()
        with tarfile.open(fileobj=buf, mode='w', format=tarfile.PAX_FORMAT) as out:
            add_dir(out, self.top)
            for name in self.order():
                parent = os.path.dirname(name)
                if parent and parent not in made:
                    add_dir(out, '%s/%s' % (self.top, parent))
                    made.add(parent)
                if name in self.replace:
                    out.addfile(self.replace[name])
                else:
                    out.addfile(member('%s/%s' % (self.top, name), len(self.files[name])),
                                io.BytesIO(self.files[name]))
                for after, extra, data in self.extra:
                    if after == name:
                        out.addfile(extra, io.BytesIO(data) if data is not None else None)
        return buf.getvalue()

    def archive(self, path, seal=True):
        save(path, zstd(self.tar(seal)))

    def directory(self, path):
        self.seal()
        shutil.rmtree(path, ignore_errors=True)
        for name in self.order():
            full = os.path.join(path, name)
            os.makedirs(os.path.dirname(full), mode=0o700, exist_ok=True)
            save(full, self.files[name])
            os.chmod(full, 0o600)
        os.chmod(path, 0o700)


def add_dir(out, name):
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o700
    out.addfile(info)


def member(name, size=0, kind=tarfile.REGTYPE, link=''):
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o600
    info.type = kind
    info.linkname = link
    return info


def zstd(data, *args):
    return subprocess.run(['zstd', '-q', '-c'] + list(args), input=data, capture_output=True, check=True).stdout


def save(path, data):
    with open(path, 'wb') as handle:
        handle.write(data)


# ---------------------------------------------------------------- how each case is made
# Each maker gets the Context and the path to write; what it must make is in CASES.

class Context:
    def __init__(self, args):
        self.args = args
        self.base = Backup(args.source)
        self.disk = self.base.entry('disk')
        self.efi = Backup(args.efi_source) if args.efi_source else None
        self.escape = args.escape
        self.evil = args.evil
        self.other_disk = args.other_disk
        self.other_domain = args.other_domain
        self.planted = []
        self.good = zstd(self.base.copy().tar())
        if os.path.isdir(args.source):
            self.archive = self.good
        else:
            with open(args.source, 'rb') as handle:
                self.archive = handle.read()


def make_good(ctx, path):
    save(path, ctx.good)


def make_flipped_zstd(ctx, path):
    # The first byte from the middle on whose flip zstd's own decoding stops at: what it
    # put out before is the true stream cut short, never a wrong byte. (A flip that zstd
    # decodes into wrong bytes, caught only by the frame's checksum at the end, reaches
    # the tar reader first, which then names whatever it trips on.)
    raw = ctx.archive
    plain = zstd(raw, '-d')
    for offset in range(len(raw) // 2, len(raw)):
        flipped = bytearray(raw)
        flipped[offset] ^= 0x01
        check = subprocess.run(['zstd', '-q', '-d', '-c'], input=bytes(flipped), capture_output=True, check=False)
        if check.returncode != 0 and check.stdout != plain and plain.startswith(check.stdout):
            save(path, bytes(flipped))
            return
    raise RuntimeError('no flipped byte past the middle that zstd itself detects')


def make_truncated(ctx, path):
    save(path, ctx.archive[:len(ctx.archive) // 2])


def make_flipped_data(ctx, path):
    bad = ctx.base.copy()
    bad.seal()  # the true digests, then the flip: zstd is happy, the digest is not
    data = bytearray(bad.files[ctx.disk['name']])
    data[len(data) // 3] ^= 0x01
    bad.files[ctx.disk['name']] = bytes(data)
    bad.archive(path, seal=False)


def make_newer(ctx, path):
    newer = ctx.base.copy()
    newer.manifest['format_version'] = 2
    newer.archive(path)


def make_dotdot(ctx, path):
    bad = ctx.base.copy()
    bad.extra.append(('domain.xml', member('%s/../%s' % (bad.top, ctx.evil), 5), b'evil\n'))
    bad.archive(path)


def make_dotdot_manifest(ctx, path):
    bad = ctx.base.copy()
    entry = bad.entry('disk')
    old = entry['name']
    entry['name'] = 'disks/../../%s' % ctx.evil
    bad.files[entry['name']] = bad.files.pop(old)
    bad.archive(path)


def make_absolute(ctx, path):
    bad = ctx.base.copy()
    bad.extra.append(('domain.xml', member(os.path.join(ctx.escape, 'evil-absolute'), 5), b'evil\n'))
    bad.archive(path)


def make_symlink(ctx, path):
    bad = ctx.base.copy()
    name = ctx.disk['name']
    bad.replace[name] = member('%s/%s' % (bad.top, name), kind=tarfile.SYMTYPE,
                               link=os.path.join(ctx.escape, 'evil-link'))
    bad.archive(path)


def make_symlink_extra(ctx, path):
    bad = ctx.base.copy()
    bad.extra.append(('domain.xml', member('%s/disks/evil' % bad.top, kind=tarfile.SYMTYPE, link='/etc/shadow'), None))
    bad.archive(path)


def make_hardlink(ctx, path):
    bad = ctx.base.copy()
    name = ctx.disk['name']
    bad.replace[name] = member('%s/%s' % (bad.top, name), kind=tarfile.LNKTYPE, link='/etc/passwd')
    bad.archive(path)


def make_otherdisk(ctx, path):
    other = ctx.base.copy()
    other.rewrite_text(ctx.disk['path'], ctx.other_disk)
    other.archive(path)


def make_nvram_escape(ctx, path):
    efi = ctx.efi.copy()
    nvram = efi.entry('nvram')
    efi.name_nvram(nvram['path'])  # libvirt's default path, written out, so that it can be rewritten
    efi.rewrite_text(nvram['path'], os.path.join(ctx.escape, 'nvram', os.path.basename(nvram['path'])))
    efi.archive(path)


def make_not_ours(_ctx, path):
    foreign = io.BytesIO()
    with tarfile.open(fileobj=foreign, mode='w', format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(member('etc/hostname', 5), io.BytesIO(b'host\n'))
    save(path, zstd(foreign.getvalue()))


def make_text(_ctx, path):
    save(path, b'hello\n')


def make_just_a_dir(_ctx, path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, mode=0o700)
    save(os.path.join(path, 'manifest.json'), b'{}\n')


def make_dir_symlink(ctx, path):
    # The disk replaced by a symlink to a copy outside: same bytes, so only the link is wrong.
    ctx.base.copy().directory(path)
    outside = os.path.join(ctx.escape, 'evil-dir-link')
    shutil.copyfile(os.path.join(path, ctx.disk['name']), outside)
    ctx.planted.append(outside)
    os.unlink(os.path.join(path, ctx.disk['name']))
    os.symlink(outside, os.path.join(path, ctx.disk['name']))


def make_dir_flipped(ctx, path):
    ctx.base.copy().directory(path)
    with open(os.path.join(path, ctx.disk['name']), 'r+b') as handle:
        handle.seek(len(ctx.base.files[ctx.disk['name']]) // 3)
        byte = handle.read(1)
        handle.seek(-1, 1)
        handle.write(bytes([byte[0] ^ 0x01]))


def make_dir_incomplete(ctx, path):
    ctx.base.copy().directory(path)
    os.unlink(os.path.join(path, 'checksums.json'))


# ---------------------------------------------------------------- the case table

def case(name, made, maker, says=(), way=(), states=BOTH, expect='failed', unusable=True, needs=(), disk_dir=False):
    return dict(name=name, made=made, maker=maker, says=list(says), way=list(way), states=list(states),
                expect=expect, unusable=unusable and expect == 'failed',
                needs=list(needs) + (['disk_dir'] if disk_dir else []), disk_dir=disk_dir)


# name, how it is made, its maker, and the refusal vm_backup must give. Unless
# said otherwise a case is tried both ways (verified, and restored with force),
# is refused as unusable (see the docstring), and needs only --source.
# In the text, {top} stands for the backup's top directory, {disk} for its
# disk's name in it (disks/00-...), {escape}, {evil}, {other_disk} and
# {other_domain} for those arguments.
CASES = [
    case('good.tar.zst', 'the source rebuilt with no flaw (the control: the rebuild alone is no flaw)',
         make_good, states=['verified'], expect='ok'),
    # -- damaged
    case('flipped-zstd.tar.zst', 'one byte flipped in the compressed stream of the source archive, where zstd detects it',
         make_flipped_zstd, says=['zstd cannot decompress it', 'the archive is damaged']),
    case('truncated.tar.zst', 'the first half of the source archive',
         make_truncated, says=['truncated']),
    case('flipped-data.tar.zst', 'one byte flipped in the disk image, the digests sealed before',
         make_flipped_data, says=['the SHA-256 of {disk} does not match its checksum']),
    case('dir-flipped', 'a directory backup with one byte flipped in the disk image',
         make_dir_flipped, says=['the SHA-256 of {disk} does not match its checksum']),
    case('dir-incomplete', 'a directory backup without its checksum list (interrupted)',
         make_dir_incomplete, says=['it has no checksums.json: incomplete']),
    # -- not a backup, or not one this collection reads
    case('hello.tar.zst', 'a text file named like an archive',
         make_text, says=['not a backup made by vm_backup']),
    case('not-ours.tar.zst', 'a valid tar.zst that is not a backup',
         make_not_ours, says=['not a backup made by vm_backup']),
    case('just-a-dir', "a directory with an empty manifest.json ('{}')",
         make_just_a_dir, says=['its manifest is not a kvm.snapshots.vm_backup manifest']),
    case('newer.tar.zst', 'manifest format_version 2',
         make_newer, says=['it has format version 2, newer than the 1 this kvm.snapshots reads: '
                           'upgrade the kvm.snapshots collection']),
    # -- hostile paths
    case('dotdot.tar.zst', "an extra member TOP/../EVIL after domain.xml",
         make_dotdot, says=["member '{top}/../{evil}' climbs out with '..'"]),
    case('dotdot-manifest.tar.zst', "the disk listed and stored as disks/../../EVIL",
         make_dotdot_manifest, says=["manifest file 'disks/../../{evil}' climbs out with '..'"]),
    case('absolute.tar.zst', 'an extra member ESCAPE/evil-absolute (an absolute path)',
         make_absolute, says=["member '{escape}/evil-absolute' is an absolute path"]),
    case('symlink.tar.zst', 'the disk member a symbolic link to ESCAPE/evil-link',
         make_symlink, says=["member '{top}/{disk}' is a symbolic link"]),
    case('symlink-extra.tar.zst', 'an extra member TOP/disks/evil, a symbolic link to /etc/shadow',
         make_symlink_extra, says=["member '{top}/disks/evil' is a symbolic link"]),
    case('hardlink.tar.zst', 'the disk member a hard link to /etc/passwd',
         make_hardlink, says=["member '{top}/{disk}' is a hard link"]),
    case('dir-symlink', 'a directory backup whose disk is a symbolic link to a copy in ESCAPE',
         make_dir_symlink, says=['{disk} is a symbolic link']),
    # -- consistent backups that only a restore can refuse
    case('otherdisk.tar.zst', "the disk path rewritten to another domain's disk",
         make_otherdisk, states=['restored'], unusable=False, needs=['other_disk', 'other_domain'],
         says=["{other_disk} belongs to domain '{other_domain}'"], way=['restore with disk_dir to put the disks elsewhere']),
    case('nvram-escape.tar.zst', 'a UEFI backup whose NVRAM path points into ESCAPE, restored into disk_dir',
         make_nvram_escape, states=['restored'], needs=['efi_source'], disk_dir=True,
         says=["its NVRAM would go to {escape}/nvram/", "outside libvirt's NVRAM directory"]),
]


def table(out=None, fields=None):
    """``(runs, skipped)``: one run per case and state, its text filled in from ``fields``.

    Without ``fields`` (``--table``), every case with its text as written.
    """
    runs, skipped = [], []
    for entry in CASES:
        path = os.path.join(out, entry['name']) if out else entry['name']
        says, way = list(entry['says']), list(entry['way'])
        if fields is not None:
            missing = [n for n in entry['needs'] if fields.get(n) is None]
            if missing:
                skipped.append({'name': entry['name'], 'needs': missing})
                continue
            says = [text.format(**fields) for text in says]
        if entry['unusable']:
            says, way = [UNUSABLE[0] % path] + says, way + [UNUSABLE[1]]
        for state in entry['states']:
            args = {'state': state, 'src': path}
            if state == 'restored':
                args['force'] = True
            if entry['disk_dir']:
                args['disk_dir'] = fields['disk_dir'] if fields else 'DISK_DIR'
            runs.append({'id': '%s %s: %s' % (state, entry['name'], entry['made']), 'case': entry['name'],
                         'made': entry['made'], 'args': args, 'expect': entry['expect'], 'says': says, 'way': way,
                         'unusable': entry['unusable']})
    return runs, skipped


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n', 1)[0])
    parser.add_argument('--table', action='store_true', help='print the runs of the table, make nothing')
    parser.add_argument('--source')
    parser.add_argument('--efi-source')
    parser.add_argument('--other-disk')
    parser.add_argument('--other-domain')
    parser.add_argument('--disk-dir')
    parser.add_argument('--escape')
    parser.add_argument('--evil')
    parser.add_argument('out', nargs='?')
    args = parser.parse_args()
    if args.table:
        json.dump({'runs': table()[0]}, sys.stdout, indent=1)
        return
    if not (args.source and args.escape and args.evil and args.out):
        parser.error('--source, --escape, --evil and OUTDIR are required')
    out = os.path.abspath(args.out)
    args.escape = os.path.abspath(args.escape)
    os.makedirs(out, exist_ok=True)
    os.makedirs(args.escape, exist_ok=True)
    ctx = Context(args)
    runs, skipped = table(out, dict(vars(args), top=ctx.base.top, disk=ctx.disk['name']))
    makers = {entry['name']: entry['maker'] for entry in CASES}
    for name in sorted({run['case'] for run in runs}, key=[e['name'] for e in CASES].index):
        makers[name](ctx, os.path.join(out, name))
    json.dump({'runs': runs, 'skipped': skipped, 'planted': ctx.planted}, sys.stdout, indent=1)


if __name__ == '__main__':
    main()
