# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/live.py: which disks get an overlay, the snapshot definition that makes them, the definition put
back after a crash, and the merge's error paths that a real libvirt cannot be made to produce on demand
(a pivot not ready yet, a daemon gone between two calls, a commit refused). The live cycle itself is
proved against real running domains by the vm_backup_live integration target."""

from __future__ import annotations

import pytest

pytest.importorskip('lxml')
libvirt = pytest.importorskip('libvirt')

from ansible_collections.kvm.snapshots.plugins.module_utils import _libvirt as lv  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup import live  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.live import (  # noqa: E402
    LiveOverlay,
    covered_disks,
    merge_all,
    overlay_xml,
    undo_overlays,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._domain_xml import (  # noqa: E402
    backup_overlays,
    is_overlay,
    overlay_path,
    overlays_in,
)

DOMAIN = """<domain type='kvm'><name>web1</name><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/img/web1.qcow2'/>
    <target dev='vda'/></disk>
  <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/img/data.raw'/>
    <target dev='vdb'/></disk>
  <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/img/ro.raw'/><readonly/>
    <target dev='vdc'/></disk>
  <disk type='file' device='cdrom'><source file='/isos/install.iso'/><target dev='sda'/></disk>
  <disk type='file' device='cdrom'><target dev='sdb'/></disk>
</devices></domain>"""

# As libvirt leaves the persistent definition while an overlay is on vda.
ON_OVERLAY = """<domain type='kvm'><name>web1</name><devices>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
    <source file='/img/.web1.raw.kvmsnap-overlay'/>
    <backingStore type='file'><format type='raw'/><source file='/img/web1.raw'/></backingStore>
    <target dev='vda'/></disk>
  <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
    <source file='/img/.top.qcow2.kvmsnap-overlay'/>
    <backingStore type='file'><format type='qcow2'/><source file='/img/top.qcow2'/>
      <backingStore type='file'><format type='qcow2'/><source file='/img/base.qcow2'/></backingStore>
    </backingStore>
    <target dev='vdb'/></disk>
</devices></domain>"""


def test_overlay_names_sit_beside_their_disk_and_are_recognised():
    assert overlay_path('/var/lib/libvirt/images/web1.qcow2') == '/var/lib/libvirt/images/.web1.qcow2.kvmsnap-overlay'
    assert is_overlay(overlay_path('/img/a b.qcow2'))
    for other in ('/img/web1.qcow2', '/img/.kvmsnap-overlay', '/img/web1.qcow2.kvmsnap-overlay', None, ''):
        assert not is_overlay(other)


def test_only_writable_disks_get_an_overlay_and_every_other_disk_is_left_alone():
    root = lv.parse_xml(DOMAIN)
    disks = covered_disks(root)
    assert disks == [('vda', '/img/web1.qcow2'), ('vdb', '/img/data.raw')]
    snap = lv.parse_xml(overlay_xml(root, disks))
    assert [(d.get('name'), d.get('snapshot')) for d in snap.iterfind('disks/disk')] == [
        ('vda', 'external'), ('vdb', 'external'), ('vdc', 'no'), ('sda', 'no'), ('sdb', 'no')]
    assert [d.find('source').get('file') for d in snap.iterfind('disks/disk') if d.get('snapshot') == 'external'] \
        == ['/img/.web1.qcow2.kvmsnap-overlay', '/img/.data.raw.kvmsnap-overlay']


@pytest.mark.parametrize('disk, kind', [
    ("<disk type='block' device='disk'><source dev='/dev/vg0/data'/><target dev='vdd'/></disk>", 'a block device'),
    ("<disk type='volume' device='disk'><source pool='default' volume='d.qcow2'/><target dev='vdd'/></disk>",
     'a storage pool volume'),
])
def test_a_writable_disk_that_is_not_a_file_is_refused_before_anything(disk, kind):
    root = lv.parse_xml(DOMAIN.replace('</devices>', disk + '</devices>'))
    with pytest.raises(lv.InvalidInput, match=r"^disk vdd of domain 'web1' is %s, and a live backup puts its overlays "
                                              r"on file disks only: use if_running: suspend .*\(nothing was changed\)$"
                       % kind):
        covered_disks(root, 'web1')
    readonly = lv.parse_xml(DOMAIN.replace('</devices>', disk.replace('<target', '<readonly/><target') + '</devices>'))
    assert [t for t, _p in covered_disks(readonly, 'web1')] == ['vda', 'vdb']


def test_an_overlay_path_is_escaped_in_the_snapshot_definition():
    root = lv.parse_xml(DOMAIN.replace('/img/web1.qcow2', "/img/it&apos;s &lt;&amp;&gt;.qcow2"))
    snap = lv.parse_xml(overlay_xml(root, covered_disks(root)))
    assert snap.find('disks/disk/source').get('file') == "/img/.it's <&>.qcow2.kvmsnap-overlay"


def test_a_definition_left_on_overlays_is_put_back_on_the_disks_under_them():
    root = lv.parse_xml(ON_OVERLAY)
    assert overlays_in(root) == [('vda', '/img/.web1.raw.kvmsnap-overlay'), ('vdb', '/img/.top.qcow2.kvmsnap-overlay')]
    assert undo_overlays(root, [path for _t, path in overlays_in(root)])
    vda, vdb = root.iterfind('devices/disk')
    assert (vda.find('source').get('file'), vda.find('driver').get('type'), vda.find('backingStore')) == \
        ('/img/web1.raw', 'raw', None)
    # A chain the definition spelled out stays, one level up.
    assert vdb.find('source').get('file') == '/img/top.qcow2'
    assert vdb.find('backingStore/source').get('file') == '/img/base.qcow2'
    assert overlays_in(root) == []
    assert not undo_overlays(root, ['/img/.web1.raw.kvmsnap-overlay'])


def test_the_overlays_of_a_test_driver_domain_are_none():
    conn = libvirt.open('test:///default')
    try:
        assert backup_overlays(conn.lookupByName('test')) == []
    finally:
        conn.close()


def test_quiesce_without_an_agent_channel_is_refused_before_anything(monkeypatch):
    conn = libvirt.open('test:///default')
    try:
        hold = LiveOverlay('test:///default', conn.lookupByName('test'), quiesce=True)
        with pytest.raises(lv.InvalidInput, match=r"^quiesce needs the QEMU guest agent, and domain 'test' has no "
                                                  r"guest agent channel: .* \(nothing was changed\)$"):
            hold.take()
        assert hold.disks == [] and hold.give_back() == (None, None)
    finally:
        conn.close()


def test_no_room_beside_a_disk_is_refused_naming_the_disk(monkeypatch):
    monkeypatch.setattr(live, 'free_bytes', lambda path: 1 << 20)
    with pytest.raises(lv.OperationFailed, match=r"^no room for the live backup overlay of disk vda of domain 'web1' "
                                                 r"in /img \(1\.0 MiB free, needs 64\.0 MiB .*if_running: suspend "
                                                 r"\(nothing was changed\)$"):
        live.check_room('web1', [('vda', '/img/web1.qcow2')])


class FakeDom:
    """Just enough of a virDomain for the merge: block jobs whose answers a test scripts."""

    def __init__(self, pivots, commit_error=None):
        self.pivots = list(pivots)     # what each pivot attempt raises (None: it works)
        self.commit_error = commit_error
        self.calls = []

    def name(self):
        return 'web1'

    def XMLDesc(self, flags):
        return ON_OVERLAY

    def isPersistent(self):
        return False

    def blockJobInfo(self, target, flags):
        self.calls.append(('info', target))
        return dict(cur=5, end=5) if ('commit', target) in self.calls else {}

    def blockCommit(self, target, base, top, bandwidth, flags):
        if self.commit_error:
            raise self.commit_error
        self.calls.append(('commit', target))

    def blockJobAbort(self, target, flags):
        self.calls.append(('pivot' if flags else 'abort', target))
        error = self.pivots.pop(0)
        if error:
            raise error


def libvirt_error(code, domain, text):
    exc = libvirt.libvirtError(text)
    exc.err = (code, domain, text, 2, None, None, None, 0, 0)
    return exc


class Holder:
    def __init__(self, dom):
        self.dom = dom
        self.name = 'web1'
        self.reconnected = 0

    def reconnect(self):
        self.reconnected += 1
        return self.dom


def test_a_pivot_not_ready_yet_is_tried_again(tmp_path):
    overlay = tmp_path / '.web1.qcow2.kvmsnap-overlay'
    overlay.touch()
    not_ready = libvirt_error(libvirt.VIR_ERR_BLOCK_COPY_ACTIVE, libvirt.VIR_FROM_QEMU,
                              "block job 'vda' not ready for pivot yet")
    dom = FakeDom([not_ready, not_ready, None])
    merge_all(Holder(dom), [('vda', str(overlay))])
    assert [c for c in dom.calls if c[0] != 'info'] == [('commit', 'vda')] + [('pivot', 'vda')] * 3
    assert not overlay.exists()


def test_a_daemon_restarted_before_the_merge_is_waited_for_and_the_merge_done(tmp_path):
    overlay = tmp_path / '.web1.qcow2.kvmsnap-overlay'
    overlay.touch()
    broke = libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC, 'client socket is closed')
    dom = FakeDom([None], commit_error=broke)
    holder = Holder(dom)

    def fixed():
        dom.commit_error = None
        return dom
    holder.reconnect = fixed
    merge_all(holder, [('vda', str(overlay))])
    assert ('pivot', 'vda') in dom.calls and not overlay.exists()


def test_a_refused_merge_keeps_the_overlay_and_says_how_to_merge_it(tmp_path):
    overlay = tmp_path / '.web1.qcow2.kvmsnap-overlay'
    overlay.touch()
    dom = FakeDom([], commit_error=libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED, libvirt.VIR_FROM_QEMU,
                                                 'disk vda already in active block job'))
    with pytest.raises(lv.OperationFailed) as exc:
        merge_all(Holder(dom), [('vda', str(overlay))])
    assert str(exc.value) == (
        "merging the live backup overlay of disk vda of domain 'web1' back failed (disk vda already in active block "
        "job): the guest's writes are safe in %s, which it keeps using: run vm_backup on the domain again, which "
        "merges it first, or merge it by hand ('virsh blockcommit web1 vda --active --pivot')" % overlay)
    assert overlay.exists()


def test_an_overlay_a_block_pull_flattened_is_not_committed_and_the_way_back_is_named(tmp_path):
    dom = FakeDom([])
    dom.XMLDesc = lambda flags: ON_OVERLAY.replace("<backingStore type='file'><format type='raw'/><source "
                                                   "file='/img/web1.raw'/></backingStore>", '<backingStore/>')
    with pytest.raises(lv.OperationFailed, match=r"a block pull copied the disk into it.*'virsh blockcopy web1 vda "
                                                 r"/img/web1.raw --reuse-external --format qcow2 --transient-job "
                                                 r"--wait --pivot'"):
        merge_all(Holder(dom), [('vda', '/img/.web1.raw.kvmsnap-overlay')])
    assert ('commit', 'vda') not in dom.calls
