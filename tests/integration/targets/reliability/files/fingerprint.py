# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Print a JSON fingerprint of libvirt domains and of some paths, to compare before and after a test case.

    fingerprint.py [--uri URI] [--domain NAME]... [--path GLOB]...

``domains``, per domain: whether it exists, its state, the SHA-256 of ``virsh dumpxml
--inactive --security-info``, every snapshot with its parent and the SHA-256 of its
secure XML, the current snapshot, and the SHA-256, size and mode of every file the
domain uses (each disk with its whole backing chain, the NVRAM). The NVRAM of a
running UEFI domain is the guest's to write: it is only checked to exist.

``files``: every path matching a GLOB (hidden names too when the pattern says so),
and for directories everything below them (links not followed), with type, mode,
size and modification time, and the SHA-256 of regular files up to 1 MiB; a file
written, removed, renamed or touched anywhere there shows.

It only reads: libvirt query calls, ``qemu-img info -U``, files opened read-only.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET

import libvirt

SMALL = 1 << 20


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def sha256_text(text):
    return hashlib.sha256(text.encode()).hexdigest()


def describe_file(path, hash_limit=None):
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return dict(exists=False)
    entry = dict(exists=True, mode='%04o' % stat.S_IMODE(info.st_mode), size=info.st_size)
    if hash_limit is not None:
        entry['mtime_ns'] = info.st_mtime_ns
    if stat.S_ISREG(info.st_mode):
        if hash_limit is None or info.st_size <= hash_limit:
            entry['sha256'] = sha256_file(path)
    elif stat.S_ISLNK(info.st_mode):
        entry['link'] = os.readlink(path)
    else:
        entry['type'] = stat.S_IFMT(info.st_mode)
    return entry


def chain(path):
    """The file and every backing file under it, as qemu-img sees them."""
    proc = subprocess.run(['qemu-img', 'info', '-U', '--backing-chain', '--output=json', path],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return [path]
    data = json.loads(proc.stdout)
    images = data if isinstance(data, list) else [data]
    return [image['filename'] for image in images if image.get('filename', '').startswith('/')] or [path]


def nvram_path(root):
    nvram = root.find('os/nvram')
    if nvram is not None and nvram.text:
        return nvram.text.strip()
    os_node = root.find('os')
    if os_node is not None and (os_node.get('firmware') == 'efi' or root.find("os/loader[@type='pflash']") is not None):
        return '/var/lib/libvirt/qemu/nvram/%s_VARS.fd' % root.findtext('name')  # libvirt's default
    return None


def domain_files(xml_text):
    root = ET.fromstring(xml_text)
    files = []
    for disk in root.iter('disk'):
        source = disk.find('source')
        if source is None:
            continue
        path = source.get('file') or source.get('dev')
        if path:
            files.extend(chain(path) if disk.get('type', 'file') == 'file' else [path])
    if nvram_path(root):
        files.append(nvram_path(root))
    return files


def snapshot_of(snap):
    xml = snap.getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE)
    try:
        parent = snap.getParent(0).getName()
    except libvirt.libvirtError:
        parent = None
    return dict(parent=parent, xml_sha256=sha256_text(xml))


def domain_print(conn, name, live):
    """``live`` collects the files a running domain's guest may write (its NVRAM): those are only checked to exist."""
    try:
        dom = conn.lookupByName(name)
    except libvirt.libvirtError:
        return dict(exists=False)
    inactive = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE)
    files = domain_files(inactive)
    if dom.isActive():
        active = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE)
        files += domain_files(active)
        for xml_text in (inactive, active):
            if nvram_path(ET.fromstring(xml_text)):
                live.add(nvram_path(ET.fromstring(xml_text)))
    snapshots = {snap.getName(): snapshot_of(snap) for snap in dom.listAllSnapshots(0)}
    return dict(
        exists=True,
        state=dom.state()[0],
        xml_sha256=sha256_text(inactive),
        snapshots=snapshots,
        current=dom.snapshotCurrent(0).getName() if dom.hasCurrentSnapshot(0) else None,
        files={path: dict(exists=os.path.exists(path), written_by='the running guest') if path in live
               else describe_file(path) for path in sorted(set(files))},
    )


def path_print(pattern, entries, live):
    def describe(path):
        if path in live:
            return dict(exists=True, written_by='the running guest')
        return describe_file(path, SMALL)
    for top in sorted(glob.glob(pattern)):
        entries[top] = describe(top)
        if os.path.isdir(top) and not os.path.islink(top):
            for base, dirs, files in os.walk(top):
                for name in sorted(dirs + files):
                    full = os.path.join(base, name)
                    entries[full] = describe(full)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument('--uri', default='qemu:///system')
    parser.add_argument('--domain', action='append', default=[])
    parser.add_argument('--path', action='append', default=[])
    args = parser.parse_args()
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    result = dict(domains={}, files={})
    live = set()
    if args.domain:
        conn = libvirt.open(args.uri)  # read-only connections may not read secure XML; only reads follow
        try:
            for name in args.domain:
                result['domains'][name] = domain_print(conn, name, live)
        finally:
            conn.close()
    for pattern in args.path:
        path_print(pattern, result['files'], live)
    json.dump(result, sys.stdout, sort_keys=True)


if __name__ == '__main__':
    main()
