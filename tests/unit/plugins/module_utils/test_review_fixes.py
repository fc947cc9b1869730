# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Review fixes of issue 16 in _snapshot.py: error paths libvirt cannot produce on demand, with small fakes.

The backup ones live beside their files in _backup/ (test_commit, test_hold, test_locks, test_catalog, test_create)."""

from __future__ import annotations

import pytest

pytest.importorskip('lxml')
libvirt = pytest.importorskip('libvirt')

from ansible_collections.kvm.snapshots.plugins.module_utils import _libvirt as lv  # noqa: E402


def test_checkpoint_names_on_a_libvirt_python_without_checkpoints(monkeypatch):
    """libvirt-python before 5.6 has neither listAllCheckpoints nor its flag: no checkpoints, no AttributeError."""
    from ansible_collections.kvm.snapshots.plugins.module_utils import _snapshot as sn

    class OldDomain:
        pass

    assert sn.checkpoint_names(OldDomain()) == []
    monkeypatch.delattr(libvirt, 'VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL')

    class NewDomain:
        def listAllCheckpoints(self, flags):
            raise AssertionError('called with %r' % flags)

    assert sn.checkpoint_names(NewDomain()) == []


def test_an_image_that_cannot_be_read_is_named_as_not_checked(tmp_path, monkeypatch):
    from ansible_collections.kvm.snapshots.plugins.module_utils import _snapshot as sn

    image = tmp_path / 'web1.qcow2'
    image.write_bytes(b'')

    def denied(path, backing_chain=False):
        raise lv.OperationFailed('qemu-img info %s failed: Permission denied' % path)

    monkeypatch.setattr(sn, 'qemu_img_info', denied)
    unread = []
    assert sn.image_bitmaps(str(image), unread) == []
    assert sn._chain(str(image), unread) == []
    assert unread == ['image %s could not be read (qemu-img info %s failed: Permission denied), so it was not '
                      'checked for %s' % (image, image, check)
                      for check in ('dirty bitmaps', 'images that use it as backing file')]


def test_a_missing_qemu_img_is_an_error_not_a_skipped_check(tmp_path, monkeypatch):
    from ansible_collections.kvm.snapshots.plugins.module_utils import _snapshot as sn

    image = tmp_path / 'web1.qcow2'
    image.write_bytes(b'')
    monkeypatch.setenv('PATH', str(tmp_path))   # no qemu-img on it
    with pytest.raises(lv.OperationFailed, match='^qemu-img not found'):
        sn.image_bitmaps(str(image), [])
    with pytest.raises(lv.OperationFailed, match='^qemu-img not found'):
        sn._chain(str(image), [])


def test_the_backing_file_refusal_names_the_overlay_and_the_external_snapshot_to_delete(monkeypatch):
    """The dependant here is the domain's own disk too: "delete it" would have meant deleting the guest's disk."""
    from ansible_collections.kvm.snapshots.plugins.module_utils import _snapshot as sn

    monkeypatch.setattr(sn, '_is_local', lambda dom: True)
    monkeypatch.setattr(sn, 'reverted_images', lambda snapshot: ['/img/base.qcow2'])
    monkeypatch.setattr(sn, 'image_users', lambda dom, tree: {
        '/img/top.qcow2': ["the domain's disk vda", "external snapshot 'ext1'"], '/img/base.qcow2': []})
    monkeypatch.setattr(sn, '_chain', lambda path, unread: [(p, {}) for p in ('/img/top.qcow2', '/img/base.qcow2')])

    class Tree:
        by_name = {'int1': None}

    with pytest.raises(lv.InvalidInput) as caught:
        sn.refuse_rewinding_backing_files(None, 'web1', Tree(), 'int1', [])
    text = str(caught.value)
    assert text.endswith(": merge the overlay /img/top.qcow2 into /img/base.qcow2 (virsh blockcommit while the domain "
                         "runs, qemu-img commit while it is shut off), or delete external snapshot 'ext1' first "
                         "(vm_snapshot state=absent)")
    assert 'delete it' not in text


def test_bitmaps_alone_lead_with_qemu_img_bitmap_not_checkpoint_delete(monkeypatch):
    from ansible_collections.kvm.snapshots.plugins.module_utils import _snapshot as sn

    monkeypatch.setattr(sn, '_is_local', lambda dom: True)
    monkeypatch.setattr(sn, 'checkpoint_names', lambda dom: [])
    monkeypatch.setattr(sn, 'image_bitmaps', lambda path, unread: ['b1'])
    with pytest.raises(lv.InvalidInput) as caught:
        sn.refuse_beside_checkpoints(None, 'web1', "revert domain 'web1' to snapshot 's'", ['/img/a.qcow2'], unread=[])
    text = str(caught.value)
    assert 'bitmap b1 in image /img/a.qcow2' in text
    assert 'checkpoint-delete' not in text and 'qemu-img bitmap --remove IMAGE NAME' in text


def test_several_raw_disks_are_named_in_the_plural(monkeypatch):
    from ansible_collections.kvm.snapshots.plugins.module_utils import _snapshot as sn

    monkeypatch.setattr(sn, '_domain_xml', lambda dom: None)
    monkeypatch.setattr(sn, 'raw_disks', lambda xml: ['vda (/a.img)', 'vdb (/b.img)'])
    with pytest.raises(lv.InvalidInput) as caught:
        sn.refuse_raw_disks(None, 'web1', dict(disk_only=False, name='s'))
    assert "cannot create snapshot 's' of domain 'web1': disks vda (/a.img), vdb (/b.img) are raw images, which " \
           "cannot hold an internal snapshot" in str(caught.value)
    assert 'convert them to qcow2' in str(caught.value)
