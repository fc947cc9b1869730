# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""vm_snapshot's diff for what the tree text cannot show (issue 14): the current snapshot, a description,
the domain's state after a revert; in check mode (which changes nothing) and for real, on test:///default.
"""

from __future__ import annotations

import pytest

libvirt = pytest.importorskip('libvirt')
pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._snapshot import (  # noqa: E402
    SnapshotTree,
    manage_domain,
)

from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils.test_snapshot_ops import DEFAULTS  # noqa: E402


def params(**given):
    return dict(DEFAULTS, uri='test:///default', domain='test', **given)


def everything(dom):
    """What a run could change, read straight from libvirt: each snapshot's XML, the current one, the state."""
    snaps = sorted((s.getName(), s.getXMLDesc(0)) for s in dom.listAllSnapshots(0))
    current = dom.snapshotCurrent(0).getName() if dom.hasCurrentSnapshot(0) else None
    return snaps, current, dom.state()[0]


def run(dom, check_mode, **given):
    return manage_domain(dom, params(**given), check_mode, diff_mode=True)


@pytest.mark.parametrize('check_mode', [True, False])
def test_current_shows_the_marker_moving(seed_domain, check_mode):
    before = everything(seed_domain)
    tree = SnapshotTree.from_domain(seed_domain).render()
    assert before[1] == 'wordpress'
    result = run(seed_domain, check_mode, state='current', name='apache')
    assert result['changed']
    diff = result['diff']
    assert diff['before'] == tree + 'current snapshot: "wordpress"\n'
    assert diff['after'] == tree + 'current snapshot: "apache"\n'
    assert diff['before_header'] == diff['after_header'] == 'test snapshots'
    after = everything(seed_domain)
    if check_mode:
        assert after == before
    else:
        assert after[1] == 'apache'
        again = run(seed_domain, check_mode, state='current', name='apache')
        assert not again['changed'] and again['diff']['before'] == again['diff']['after'] == tree


@pytest.mark.parametrize('check_mode', [True, False])
def test_description_edit_shows_old_and_new(seed_domain, check_mode):
    seed_domain.snapshotCreateXML('<domainsnapshot><name>described</name><description>old "one"</description>'
                                  '</domainsnapshot>', 0)
    seed_domain.revertToSnapshot(seed_domain.snapshotLookupByName('wordpress'))
    before = everything(seed_domain)
    tree = SnapshotTree.from_domain(seed_domain).render()
    result = run(seed_domain, check_mode, name='described', description='new\nline')
    assert result['changed']
    assert result['diff']['before'] == tree + 'description of "described": "old \\"one\\""\n'
    assert result['diff']['after'] == tree + 'description of "described": "new\\nline"\n'
    after = everything(seed_domain)
    if check_mode:
        assert after == before
    else:
        assert 'new\nline' in seed_domain.snapshotLookupByName('described').getXMLDesc(0)
        assert after[1] == 'wordpress'


def test_description_removed_shows_empty(seed_domain):
    seed_domain.snapshotCreateXML('<domainsnapshot><name>described</name><description>gone soon</description>'
                                  '</domainsnapshot>', 0)
    result = run(seed_domain, True, name='described', description='')
    assert result['diff']['before'].endswith('description of "described": "gone soon"\n')
    assert result['diff']['after'].endswith('description of "described": ""\n')


@pytest.mark.parametrize('after_revert, state', [('snapshot', 'running'), ('paused', 'paused')])
@pytest.mark.parametrize('check_mode', [True, False])
def test_revert_shows_current_and_domain_state(seed_domain, check_mode, after_revert, state):
    seed_domain.suspend()
    before = everything(seed_domain)
    tree = SnapshotTree.from_domain(seed_domain).render()
    result = run(seed_domain, check_mode, state='reverted', name='apache', after_revert=after_revert)
    assert result['changed']
    assert result['diff']['before'] == tree + 'current snapshot: "wordpress"\ndomain state: paused\n'
    assert result['diff']['after'] == (tree + 'current snapshot: "apache"\n'
                                       'domain state: %s, reverted to snapshot "apache"\n' % state)
    after = everything(seed_domain)
    if check_mode:
        assert after == before
    else:
        assert after[1] == 'apache'
        assert after[2] == {'running': libvirt.VIR_DOMAIN_RUNNING, 'paused': libvirt.VIR_DOMAIN_PAUSED}[state]


@pytest.mark.parametrize('check_mode', [True, False])
def test_revert_to_the_current_shut_off_snapshot_still_shows_a_change(seed_domain, check_mode):
    seed_domain.destroy()
    seed_domain.snapshotCreateXML('<domainsnapshot><name>off</name></domainsnapshot>', 0)
    seed_domain.create()
    before = everything(seed_domain)
    tree = SnapshotTree.from_domain(seed_domain).render()
    result = run(seed_domain, check_mode, state='reverted', name='off')
    assert result['diff']['before'] == tree + 'domain state: running\n'
    assert result['diff']['after'] == tree + 'domain state: shut off, reverted to snapshot "off"\n'
    after = everything(seed_domain)
    if check_mode:
        assert after == before
    else:
        assert after[2] == libvirt.VIR_DOMAIN_SHUTOFF and after[1] == 'off'
