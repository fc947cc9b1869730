# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Review fixes of issue 16: error paths libvirt cannot produce on demand, with small fakes."""

from __future__ import annotations

import os

import pytest

pytest.importorskip('lxml')
libvirt = pytest.importorskip('libvirt')

from ansible_collections.kvm.snapshots.plugins.module_utils import _backup as bk  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils import _libvirt as lv  # noqa: E402


class FakeStaged:
    def __init__(self, path, final):
        self.path = path
        self.final = final

    def close(self):
        pass

    def discard(self):
        if os.path.exists(self.path):
            os.unlink(self.path)


def _failing(*_args):
    raise libvirt.libvirtError('defineXML refused (fake)')


def test_a_restore_whose_rollback_cannot_define_the_old_domain_keeps_its_xml(conn, tmp_path, monkeypatch):
    dom = conn.lookupByName('test')
    dom.snapshotCreateXML('<domainsnapshot><name>before</name></domainsnapshot>', 0)
    dom.snapshotCreateXML('<domainsnapshot><name>now</name></domainsnapshot>', 0)
    snap_xml = [dom.snapshotLookupByName(n).getXMLDesc(libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE) for n in ('before', 'now')]
    dom.destroy()
    old_xml = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE)
    final = tmp_path / 'test.qcow2'
    final.write_bytes(b'old')
    staged = tmp_path / '.test.qcow2.staged'
    staged.write_bytes(b'new')
    restorer = bk.Restorer(conn, {}, False)
    restorer.existing = dom
    restorer.staged = {'disk': FakeStaged(str(staged), str(final))}
    restorer.domain_xml = '<domain/>'
    restorer.manifest = dict(snapshots={}, domain={})
    monkeypatch.setattr(conn, 'defineXML', _failing)   # neither the new nor the old definition goes in
    try:
        with pytest.raises(lv.OperationFailed) as caught:
            restorer.commit()
        kept = [p for p in os.listdir(tmp_path) if p.startswith('.test.xml' + bk.REPLACED)]
        assert len(kept) == 1, os.listdir(tmp_path)
        assert (tmp_path / kept[0]).read_text() == old_xml
        message = str(caught.value)
        assert 'rolled back (the previous domain' not in message
        assert "domain 'test' could not be defined again" in message and str(tmp_path / kept[0]) in message
        assert final.read_bytes() == b'old'     # the disk set aside is back
        # The snapshot metadata the undefine removed, parents first, the current one marked.
        snaps = sorted(p for p in os.listdir(tmp_path) if p.startswith('.test.snapshot-'))
        assert [p.split(bk.REPLACED)[0] for p in snaps] == ['.test.snapshot-001-before.xml',
                                                            '.test.snapshot-002-now-current.xml']
        assert [(tmp_path / p).read_text() for p in snaps] == snap_xml
        assert all(str(tmp_path / p) in message for p in snaps)
        assert sorted(bk.set_aside_leftovers([str(final)], ['test'])) == sorted(str(tmp_path / p) for p in kept + snaps)
    finally:
        monkeypatch.undo()
        conn.defineXML(old_xml)
        conn.lookupByName('test').create()


@pytest.mark.parametrize('action, call', [('suspend', 'resume'), ('shutdown', 'create')])
def test_a_signal_at_the_give_back_still_gives_the_domain_back(conn, monkeypatch, action, call):
    """The unwinding calls give_back again: a first call cut short must not have marked it done."""
    dom = conn.lookupByName('test')
    hold = bk.DomainHold(dom, action, 5)
    hold.take()
    real = getattr(dom, call)

    def cut_short():
        monkeypatch.setattr(dom, call, real)
        raise lv.Interrupted('SIGTERM')     # the signal lands as the call is made

    monkeypatch.setattr(dom, call, cut_short)
    with pytest.raises(KeyboardInterrupt):
        hold.give_back()
    assert hold.give_back()[1] is None
    assert lv.domain_state(dom) == 'running'
    assert hold.give_back() == (None, None)


def test_a_signal_after_a_completed_start_does_not_wait_for_a_shutdown(conn, monkeypatch):
    dom = conn.lookupByName('test')
    hold = bk.DomainHold(dom, 'shutdown', 5)
    hold.take()
    real = dom.create

    def started_then_cut():
        real()
        raise lv.Interrupted('SIGTERM')     # the call returned, the signal lands before its result is noted

    monkeypatch.setattr(dom, 'create', started_then_cut)
    with pytest.raises(KeyboardInterrupt):
        hold.give_back()
    monkeypatch.setattr(bk, '_wait_state', lambda *args: pytest.fail('waited for a shutdown'))
    assert hold.give_back() == ("domain 'test' was started again", None)
    assert lv.domain_state(dom) == 'running'


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


def test_the_backup_lock_lives_in_a_directory_no_other_user_can_write(tmp_path, monkeypatch):
    """In world-writable /run/lock any local user could hold the lock and make root's backup wait forever."""
    locks = tmp_path / 'locks'
    monkeypatch.setattr(bk, 'LOCK_DIR', str(locks))
    with bk.DomainLock('2d0c5b2a-0c1e-4f8e-9d6b-1a2b3c4d5e6f') as lock:
        assert os.path.dirname(lock.path) == str(locks)
    assert oct(os.stat(locks).st_mode & 0o7777) == oct(0o700)
    os.chmod(locks, 0o1777)     # made by someone who wants others in
    with pytest.raises(lv.InvalidInput, match='^the lock directory %s is not a directory owned by' % locks):
        bk.DomainLock('2d0c5b2a-0c1e-4f8e-9d6b-1a2b3c4d5e6f')
    os.rmdir(locks)
    os.symlink(str(tmp_path), str(locks))
    with pytest.raises(lv.InvalidInput, match='remove it, then run again'):
        bk.DomainLock('2d0c5b2a-0c1e-4f8e-9d6b-1a2b3c4d5e6f')


def test_a_directory_backup_removed_by_keep_never_looks_complete_half_deleted(tmp_path, monkeypatch):
    import datetime
    import shutil
    uuid = '6f1c5c33-8d3e-4a53-b0a4-63e3c4c0e0a1'
    name = bk.backup_name('web1', datetime.datetime(2026, 1, 2, 3, 4, 5, 678000, tzinfo=datetime.timezone.utc), uuid)
    backup = tmp_path / name
    backup.mkdir()
    for member in ('manifest.json', 'domain.xml', 'vda.qcow2'):
        (backup / member).write_bytes(b'x')
    real = shutil.rmtree

    def cut_short(path, *args, **kwargs):
        os.unlink(os.path.join(path, 'vda.qcow2'))
        raise lv.Interrupted('SIGTERM')

    monkeypatch.setattr(bk.shutil, 'rmtree', cut_short)
    with pytest.raises(KeyboardInterrupt):
        bk.remove_backup(str(backup))
    assert not backup.exists()      # not under the name of a complete backup
    monkeypatch.setattr(bk.shutil, 'rmtree', real)
    assert len(bk.remove_stale(str(tmp_path), bk.partial_pattern('web1', uuid))) == 1
    assert os.listdir(tmp_path) == []


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


def test_a_refused_probe_does_not_claim_nothing_was_written(tmp_path, monkeypatch):
    """The probe runs after dest was created: "nothing was written" would not be true."""
    def refused(**_kwargs):
        raise PermissionError(13, 'Permission denied')

    monkeypatch.setattr(bk.tempfile, 'mkstemp', refused)
    with pytest.raises(lv.OperationFailed) as caught:
        bk._probe_writable(str(tmp_path))
    assert str(caught.value).endswith('(nothing was paused and no backup was written)')
