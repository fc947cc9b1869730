# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/commit.py: the restore's swap and its rollback, on libvirt's test:///default driver, with small fakes
for the error paths libvirt cannot produce on demand; what an interrupted restore set aside is found."""

from __future__ import annotations

import errno
import os

import pytest

pytest.importorskip('lxml')
libvirt = pytest.importorskip('libvirt')

from ansible_collections.kvm.snapshots.plugins.module_utils import _libvirt as lv  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup import commit  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.commit import (  # noqa: E402
    REPLACED,
    RESTORING,
    StagedFile,
    Swap,
    set_aside_leftovers,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.manifest import FileEntry, Manifest  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.request import ReadRequest  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.restore import Restorer  # noqa: E402


class FakeStaged:
    def __init__(self, path, final):
        self.path = path
        self.final = final

    def close(self):
        pass

    def discard(self):
        if os.path.exists(self.path):
            os.unlink(self.path)


TEST_DRIVER_UNDEFINE = libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE


def _failing(*_args):
    raise libvirt.libvirtError('defineXML refused (fake)')


def plan(conn, existing, staged):
    """A Restorer as it stands once every file is staged: replacing ``existing`` with ``staged``."""
    restorer = Restorer(conn, ReadRequest(uri='test:///default', state='restored', src='/b.tar', force=True), False)
    restorer.existing = existing
    restorer.staged = staged
    restorer.domain_xml = '<domain/>'
    restorer.manifest = Manifest(name='test-backup', created='2026-11-27T02:03:04Z', domain={}, files=[], order=[])
    return restorer


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
    restorer = plan(conn, dom, {'disk': FakeStaged(str(staged), str(final))})
    # The test driver refuses the KEEP_NVRAM, KEEP_TPM and CHECKPOINTS_METADATA flags: let the undefine
    # happen (a rollback redefines only a domain it undefined, see the test below).
    monkeypatch.setattr(commit, 'undefine_flags', lambda: TEST_DRIVER_UNDEFINE)
    monkeypatch.setattr(conn, 'defineXML', _failing)   # neither the new nor the old definition goes in
    try:
        with pytest.raises(lv.OperationFailed) as caught:
            Swap(conn, restorer).run()
        kept = [p for p in os.listdir(tmp_path) if p.startswith('.test.xml' + REPLACED)]
        assert len(kept) == 1, os.listdir(tmp_path)
        assert (tmp_path / kept[0]).read_text() == old_xml
        message = str(caught.value)
        assert 'rolled back (the previous domain' not in message
        assert "domain 'test' could not be defined again" in message and str(tmp_path / kept[0]) in message
        assert final.read_bytes() == b'old'     # the disk set aside is back
        # The snapshot metadata the undefine removed, parents first, the current one marked.
        snaps = sorted(p for p in os.listdir(tmp_path) if p.startswith('.test.snapshot-'))
        assert [p.split(REPLACED)[0] for p in snaps] == ['.test.snapshot-001-before.xml',
                                                         '.test.snapshot-002-now-current.xml']
        assert [(tmp_path / p).read_text() for p in snaps] == snap_xml
        assert all(str(tmp_path / p) in message for p in snaps)
        assert sorted(set_aside_leftovers([str(final)], ['test'])) == sorted(str(tmp_path / p) for p in kept + snaps)
    finally:
        monkeypatch.undo()
        conn.defineXML(old_xml)
        conn.lookupByName('test').create()


def staged_over(final, data):
    """A real staged file holding ``data``, to replace ``final``."""
    staged = StagedFile(str(final), FileEntry(name='disks/00-test.qcow2', role='disk', size=len(data),
                                              path=str(final)))
    staged.write(0, data, len(data))
    staged.finish()
    return staged


def test_a_failed_undefine_is_not_undone_by_defining_the_domain_again(conn, tmp_path, monkeypatch):
    """The rollback redefines only what it undefined: here libvirt refused the undefine (as the test driver
    does with these flags anyway; the fake makes it certain)."""
    dom = conn.lookupByName('test')
    dom.snapshotCreateXML('<domainsnapshot><name>s1</name></domainsnapshot>', 0)
    dom.destroy()
    before = dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE)
    final = tmp_path / 'test.qcow2'
    final.write_bytes(b'old')
    staged = staged_over(final, b'new')
    defined = []
    real_define = conn.defineXML

    def recording(xml):
        defined.append(xml)
        return real_define(xml)

    def refused(_flags):
        raise libvirt.libvirtError('undefine refused (fake)')

    monkeypatch.setattr(conn, 'defineXML', recording)
    monkeypatch.setattr(dom, 'undefineFlags', refused)
    with pytest.raises(lv.OperationFailed, match='^restore failed and was rolled back'):
        Swap(conn, plan(conn, dom, {'disks/00-test.qcow2': staged})).run()
    assert defined == []
    assert [s.getName() for s in conn.lookupByName('test').listAllSnapshots(0)] == ['s1']
    assert conn.lookupByName('test').XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE) == before
    assert final.read_bytes() == b'old'
    assert os.listdir(tmp_path) == ['test.qcow2']   # nothing staged, set aside or saved is left


def test_a_failed_save_of_the_old_definition_leaves_no_partial_copy(conn, tmp_path, monkeypatch):
    """Nothing was undefined yet when saving fails: the copies already written are of no use, and removed."""
    dom = conn.lookupByName('test')
    dom.snapshotCreateXML('<domainsnapshot><name>s1</name></domainsnapshot>', 0)
    dom.snapshotCreateXML('<domainsnapshot><name>s2</name></domainsnapshot>', 0)
    dom.destroy()
    final = tmp_path / 'test.qcow2'
    final.write_bytes(b'old')
    staged = staged_over(final, b'new')
    real_write = commit.write_file
    calls = []

    def full_on_second(path, data):
        calls.append(path)
        real_write(path, data)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, 'No space left on device', path)

    monkeypatch.setattr(commit, 'write_file', full_on_second)
    with pytest.raises(lv.OperationFailed, match='^restore failed and was rolled back .*No space left on device'):
        Swap(conn, plan(conn, dom, {'disks/00-test.qcow2': staged})).run()
    assert len(calls) == 2
    assert os.listdir(tmp_path) == ['test.qcow2']
    assert final.read_bytes() == b'old'
    assert sorted(s.getName() for s in conn.lookupByName('test').listAllSnapshots(0)) == ['s1', 's2']


def test_leftovers_of_an_interrupted_restore_are_found_beside_the_files(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    (images / 'web1.qcow2').touch()
    (images / ('.web1.qcow2' + REPLACED + 'ab12cd34')).touch()
    (images / ('.web1.xml' + REPLACED + 'ef56ab78')).touch()
    (images / ('.web1.qcow2' + RESTORING + 'aa11bb22')).touch()  # a staged file: not a leftover of data
    (images / ('.web1.snapshot-001-s1-current.xml' + REPLACED + 'ef56ab78')).touch()
    (images / 'web1.qcow2.kvmsnap-replaced-not-hidden').touch()
    (images / ('.db1.qcow2' + REPLACED + 'cd34ef56')).touch()    # another domain's: not this restore's to name
    (images / ('.db1.xml' + REPLACED + 'cd34ef56')).touch()
    found = set_aside_leftovers([str(images / 'web1.qcow2'), str(tmp_path / 'nowhere' / 'x')], ['web1'])
    assert found == sorted([str(images / ('.web1.qcow2' + REPLACED + 'ab12cd34')),
                            str(images / ('.web1.xml' + REPLACED + 'ef56ab78')),
                            str(images / ('.web1.snapshot-001-s1-current.xml' + REPLACED + 'ef56ab78'))])
