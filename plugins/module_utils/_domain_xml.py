# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a domain or snapshot definition names: its disks, firmware, NVRAM, backup overlays and the files it refers to.

Private to kvm.snapshots: no stable API for other collections.
"""

from __future__ import annotations

import os

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import etree, libvirt, parse_xml

NVRAM_DIR = '/var/lib/libvirt/qemu/nvram'
OVERLAY = '.kvmsnap-overlay'    # a live backup's overlay, beside its disk: .<disk file name>.kvmsnap-overlay


def overlay_path(disk):
    directory, base = os.path.split(disk)
    return os.path.join(directory, '.%s%s' % (base, OVERLAY))


def overlay_disk(overlay):
    """The disk under ``overlay``, by its name."""
    directory, base = os.path.split(overlay)
    return os.path.join(directory, base[1:-len(OVERLAY)])


def is_overlay(path):
    base = os.path.basename(path or '')
    return base.startswith('.') and base.endswith(OVERLAY) and len(base) > len(OVERLAY) + 1


def overlays_in(domain_xml):
    """``[(target, overlay path)]``: the disks of a parsed domain definition that are on a backup overlay."""
    found = []
    for disk in domain_xml.iterfind('devices/disk'):
        source = disk.find('source')
        if source is not None and is_overlay(source.get('file')):
            found.append((disk.find('target').get('dev'), source.get('file')))
    return found


def backup_overlays(dom):
    """``[(target, overlay path)]``: a live backup's overlays on ``dom``, in its live or persistent definition."""
    found = overlays_in(parse_xml(dom.XMLDesc(0))) if dom.isActive() else []
    if dom.isPersistent():
        found += [pair for pair in overlays_in(parse_xml(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
                  if pair not in found]
    return found


def domain_disks(domain_xml):
    """The disks (not CD-ROMs) of a parsed domain XML: ``[{target, type, format, path}]``.

    ``path`` is None for disks with no local file (network disks, empty drives).
    """
    disks = []
    for disk in domain_xml.iterfind('devices/disk'):
        if disk.get('device', 'disk') not in ('disk', 'lun'):
            continue
        source = disk.find('source')
        path = None
        if source is not None:
            path = source.get('file') or source.get('dev')
        driver = disk.find('driver')
        disks.append(dict(
            target=disk.find('target').get('dev'),
            type=disk.get('type', 'file'),
            format=driver.get('type') if driver is not None else None,
            path=path,
        ))
    return disks


def is_uefi(domain_xml):
    """UEFI firmware, which QEMU keeps in pflash: ``<os firmware='efi'>`` or a pflash ``<loader>``."""
    os_node = domain_xml.find('os')
    if os_node is None:
        return False
    return os_node.get('firmware') == 'efi' or any(
        loader.get('type') == 'pflash' for loader in os_node.iterfind('loader'))


def nvram_path(domain_xml, name):
    """The NVRAM file of a parsed domain XML named ``name``: its ``<nvram>``, else libvirt's default for UEFI, else None."""
    nvram = domain_xml.find('os/nvram')
    if nvram is not None and nvram.text and nvram.text.strip():
        return nvram.text.strip()
    if is_uefi(domain_xml):
        return os.path.join(NVRAM_DIR, '%s_VARS.fd' % name)
    return None


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
