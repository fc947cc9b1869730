# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/contents.py: what a backup of a domain holds, found on libvirt's test:///default driver, and the
manifest that records it."""

from __future__ import annotations

import datetime

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup import contents as contents_module  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.contents import (  # noqa: E402
    discover,
    version_text,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.digest import digest_bytes  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    SNAPSHOT_XML,
    UUID,
    one_disk_contents,
)

TPM_DOMAIN = """<domain type='test'><name>unit1</name><uuid>%s</uuid><memory>65536</memory><os><type>hvm</type></os>
<devices>%%s</devices></domain>""" % UUID


@pytest.mark.parametrize('number, text', [(9000000, '9.0.0'), (7002022, '7.2.22'), (10010001, '10.10.1')])
def test_version_text_unpacks_libvirt_version_numbers(number, text):
    # the manifest records the libvirt and QEMU versions a backup was made with
    assert version_text(number) == text


def test_tpm_state_is_collected_with_its_directories(conn, define, tmp_path, monkeypatch):
    state = tmp_path / UUID / 'tpm2'
    state.mkdir(parents=True)
    (state / 'tpm2-00.permall').write_bytes(b'tpm state')
    monkeypatch.setattr(contents_module, 'SWTPM_DIR', str(tmp_path))
    dom = define(TPM_DOMAIN % "<tpm model='tpm-crb'><backend type='emulator' version='2.0'/></tpm>")
    found = discover(conn, dom)
    assert [(e.name, e.role, e.path) for e in found.files] == [
        ('tpm/tpm2/tpm2-00.permall', 'tpm', str(state / 'tpm2-00.permall'))]
    assert [d.path for d in found.tpm_dirs] == [str(tmp_path / UUID), str(state)]
    # without an emulated TPM in the definition, nothing is taken
    dom.undefine()
    dom = define(TPM_DOMAIN % '')
    found = discover(conn, dom)
    assert found.files == []


def test_the_manifest_records_maps_only_of_files_with_holes(tmp_path):
    disk = tmp_path / 'unit1.raw'
    disk.write_bytes(b'\xaa' * 8192)
    found = one_disk_contents(str(disk), snapshots=[('s1', SNAPSHOT_XML.format(name='s1', disk=disk))], current='s1')
    when = datetime.datetime(2026, 11, 27, 2, 3, 4, 517000, tzinfo=datetime.timezone.utc)
    dense = found.manifest('n', when, 'running', dict(format='directory'), maps=[[(0, 8192)]])
    assert (dense.created, dense.created_epoch) == ('2026-11-27T02:03:04Z', int(when.replace(microsecond=0).timestamp()))
    assert [e.name for e in dense.files] == ['domain.xml', 'snapshots/0001.xml', 'disks/00-unit1.raw']
    assert dense.files[0].piecewise_sha256 == digest_bytes(found.xml.encode()) and dense.files[1].snapshot == 's1'
    assert (dense.files[2].sparse, dense.files[2].map) == (False, None)
    assert dense.domain == dict(name='unit1', uuid=UUID, state='running', autostart=False)
    holey = found.manifest('n', when, 'shutoff', {}, maps=[[(0, 512), (4096, 512)]])
    assert (holey.files[2].sparse, holey.files[2].map) == (True, [[0, 512], [4096, 512]])
    assert holey.files[2].regions == [(0, 512), (4096, 512)]
    # before the files' layouts are read (check mode): no claim either way
    assert (found.manifest('n', when, 'shutoff', {}).files[2].sparse, found.files[0].sparse) == (None, None)
