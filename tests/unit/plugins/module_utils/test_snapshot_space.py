# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_snapshot_space.py: a new snapshot is refused before libvirt starts when its file system cannot hold it
(issue 15): an active domain's memory state into its first writable qcow2 image, a small margin otherwise."""

from __future__ import annotations

import collections
import os

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils import _snapshot_space as space  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput, parse_xml  # noqa: E402

MIB = 1024 * 1024

DOMAIN = """<domain type='kvm'><name>web1</name><memory unit='KiB'>131072</memory>
<devices>
  <disk type='file' device='cdrom'><driver name='qemu' type='qcow2'/><source file='/iso/a.qcow2'/>
    <target dev='sda'/><readonly/></disk>
  <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/ro/base.img'/>
    <target dev='vda'/><readonly/></disk>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/ro/shared.qcow2'/>
    <target dev='vdb'/><readonly/></disk>
  <disk type='network' device='disk'><driver name='qemu' type='qcow2'/><source protocol='nbd' name='x'/>
    <target dev='vdc'/></disk>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/a/first.qcow2'/>
    <target dev='vdd'/></disk>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/b/second.qcow2'/>
    <target dev='vde'/></disk>
  <video><model type='vga' vram='16384' heads='1' primary='yes'/></video>
</devices></domain>"""

StatVfs = collections.namedtuple('StatVfs', 'f_bavail f_frsize')
Stat = collections.namedtuple('Stat', 'st_dev')


def test_the_memory_state_goes_to_the_first_writable_qcow2_disk():
    assert space.vmstate_disk(parse_xml(DOMAIN)) == ('vdd', '/a/first.qcow2')


def test_memory_and_video_memory_count():
    assert space.guest_ram(parse_xml(DOMAIN)) == (128 * MIB, 16 * MIB)
    xml = parse_xml("<domain><memory unit='GiB'>2</memory><devices><video><model type='qxl' ram='65536' "
                    "vram='65536' vgamem='16384'/></video></devices></domain>")
    assert space.guest_ram(xml) == (2048 * MIB, (64 + 64 + 16) * MIB)
    assert space.guest_ram(parse_xml('<domain><memory>1024</memory></domain>')) == (MIB, 0)   # KiB by default


@pytest.mark.parametrize('memory, video, need', [
    (128 * MIB, 16 * MIB, 144 * MIB + 64 * MIB),      # the fixed margin
    (4096 * MIB, 0, 4096 * MIB + 4096 * MIB // 20),  # 5 % of a big guest
    (1280 * MIB, 0, 1280 * MIB + 64 * MIB),          # where the two meet
])
def test_the_margin_is_64_mib_or_5_percent(memory, video, need):
    assert space.vmstate_need(memory, video) == need


def test_what_each_kind_of_snapshot_writes():
    root = parse_xml(DOMAIN)
    running = space.snapshot_writes(root, active=True, disk_only=False)
    assert [(d, n) for d, n, _w in running] == [('/a', 208 * MIB), ('/b', MIB)]
    assert running[0][2] == ('the memory state of the guest (128 MiB of memory and 16 MiB of video memory, 208 MiB '
                             'with the margin) into the image of vdd, /a/first.qcow2')
    assert [(d, n) for d, n, _w in space.snapshot_writes(root, active=False, disk_only=False)] == [
        ('/a', MIB), ('/b', MIB)]
    disk_only = space.snapshot_writes(root, active=True, disk_only=True)
    assert disk_only == [('/a', MIB, 'an overlay beside /a/first.qcow2 of vdd'),
                         ('/b', MIB, 'an overlay beside /b/second.qcow2 of vde')]


def fake_fs(free_by_dir, dev_by_dir=None):
    dev_by_dir = dev_by_dir or {d: i for i, d in enumerate(free_by_dir)}

    def stat(directory):
        if directory not in dev_by_dir:
            raise FileNotFoundError(directory)
        return Stat(dev_by_dir[directory])

    return stat, lambda d: StatVfs(free_by_dir[d] // 4096, 4096)


def test_writes_on_one_file_system_add_up():
    stat, statvfs = fake_fs({'/a': 100 * MIB, '/b': 100 * MIB}, {'/a': 1, '/b': 1})
    writes = [('/a', 60 * MIB, 'x'), ('/b', 50 * MIB, 'y')]
    assert space.shortfalls(writes, stat, statvfs) == [('/a', 110 * MIB, 100 * MIB, ['x', 'y'])]
    stat, statvfs = fake_fs({'/a': 100 * MIB, '/b': 100 * MIB})
    assert space.shortfalls(writes, stat, statvfs) == []
    # exactly enough is enough; a directory not here is libvirt's to judge
    assert space.shortfalls([('/a', 100 * MIB, 'x'), ('/gone', 10 ** 12, 'z')], stat, statvfs) == []


def test_the_refusal_is_one_line_with_the_ways_out(tmp_path, monkeypatch):
    disk = tmp_path / 'd.qcow2'
    xml = parse_xml("<domain><memory unit='KiB'>131072</memory><devices><disk type='file' device='disk'>"
                    "<driver name='qemu' type='qcow2'/><source file='%s'/><target dev='vda'/></disk></devices>"
                    "</domain>" % disk)
    free = {str(tmp_path): 50 * MIB}
    monkeypatch.setattr(space.os, 'statvfs', lambda d: StatVfs(free[d] // 4096, 4096))
    params = dict(name='s1', disk_only=False)
    with pytest.raises(InvalidInput) as exc:
        space.refuse_short_of_space(xml, True, 'web1', params)
    assert str(exc.value) == (
        "cannot create snapshot 's1' of domain 'web1': it writes the memory state of the guest (128 MiB of memory, "
        "192 MiB with the margin) into the image of vda, %s, and the file system of %s has 50 MiB free of the 192 MiB "
        "it needs: free space there, shut the domain down first (a snapshot of a shut-off domain holds no memory), "
        "or set disk_only=true (nothing was changed)" % (disk, tmp_path))
    space.refuse_short_of_space(xml, False, 'web1', params)            # shut off: metadata only
    space.refuse_short_of_space(xml, True, 'web1', dict(params, disk_only=True))
    free[str(tmp_path)] = 192 * MIB
    space.refuse_short_of_space(xml, True, 'web1', params)
    free[str(tmp_path)] = 8192
    with pytest.raises(InvalidInput, match=r'has 8192 bytes free of the 1 MiB it needs: free space there \(nothing'):
        space.refuse_short_of_space(xml, False, 'web1', params)


def test_a_remote_hypervisor_is_not_looked_at(monkeypatch):
    class Conn:
        def getURI(self):
            return 'qemu+ssh://root@hv1/system'

    class Dom:
        def connect(self):
            return Conn()

        def XMLDesc(self, _flags):
            raise AssertionError('a remote domain is not read')

    space.check_snapshot_space(Dom(), 'web1', dict(name='s1', disk_only=False))
    assert os.path.sep == '/'
