# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_domain_xml.py: what a domain or snapshot definition names (disks, firmware, NVRAM, files), and its paths rewritten."""

from __future__ import annotations

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._domain_xml import (  # noqa: E402
    NVRAM_DIR,
    domain_disks,
    is_uefi,
    nvram_path,
    referenced_files,
    rewrite_paths,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import parse_xml  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    DOMAIN_XML,
    SNAPSHOT_XML,
)


def test_rewrite_paths_covers_domain_snapshot_and_backing_store():
    snap = SNAPSHOT_XML.format(name='s1', disk='/old/a.qcow2').replace(
        "<memory snapshot='no'/>", "<memory snapshot='external' file='/old/mem'/>")
    out = rewrite_paths(snap, {'/old/a.qcow2': '/new/a.qcow2', '/old/mem': '/new/mem'})
    assert '/old/' not in out
    assert out.count('/new/a.qcow2') == 2 and '/new/mem' in out
    same = DOMAIN_XML.format(disk='/x/a.raw')
    assert rewrite_paths(same, {'/y': '/z'}) is same


def test_referenced_files_skips_cdroms():
    assert referenced_files(DOMAIN_XML.format(disk='/x/a.raw')) == ['/x/a.raw']


def test_referenced_files_include_memory_files_and_skip_floppies():
    xml = ("<domainsnapshot><name>s</name><memory snapshot='external' file='/var/lib/libvirt/qemu/s.mem'/>"
           "<domain><devices>"
           "<disk type='file' device='disk'><source file='/img/a.qcow2'/><target dev='vda'/></disk>"
           "<disk type='file' device='floppy'><source file='/img/boot.img'/><target dev='fda'/></disk>"
           "<disk type='file' device='cdrom'><source file='/img/os.iso'/><target dev='sda'/></disk>"
           "</devices></domain></domainsnapshot>")
    assert sorted(referenced_files(xml)) == ['/img/a.qcow2', '/var/lib/libvirt/qemu/s.mem']


def test_domain_disks_are_disks_and_luns_not_cdroms():
    xml = DOMAIN_XML.format(disk='/x/a.raw').replace('</devices>', (
        "<disk type='network' device='disk'><source protocol='rbd' name='pool/img'/><target dev='vdb'/></disk>"
        "<disk type='block' device='lun'><source dev='/dev/sdz'/><target dev='sdb'/></disk></devices>"))
    assert domain_disks(parse_xml(xml)) == [
        dict(target='vda', type='file', format='raw', path='/x/a.raw'),
        dict(target='vdb', type='network', format=None, path=None),
        dict(target='sdb', type='block', format=None, path='/dev/sdz')]


@pytest.mark.parametrize('os_xml, uefi, nvram', [
    ("<os><type>hvm</type></os>", False, None),
    ("<os firmware='efi'><type>hvm</type></os>", True, NVRAM_DIR + '/web1_VARS.fd'),
    ("<os><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader></os>", True,
     NVRAM_DIR + '/web1_VARS.fd'),
    ("<os><loader type='rom'>/x</loader><nvram> /srv/nv/web1.fd </nvram></os>", False, '/srv/nv/web1.fd'),
    ("<os firmware='efi'><nvram>   </nvram></os>", True, NVRAM_DIR + '/web1_VARS.fd'),
], ids=['bios', 'efi', 'pflash', 'explicit', 'empty-nvram'])
def test_uefi_and_the_nvram_file(os_xml, uefi, nvram):
    root = parse_xml("<domain><name>web1</name>%s</domain>" % os_xml)
    assert is_uefi(root) is uefi
    assert nvram_path(root, 'web1') == nvram
    assert is_uefi(parse_xml('<domain><name>web1</name></domain>')) is False
