# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Edges of _snapshot.py that mutation testing (mutmut, tests/README.md) found unguarded.

Each test pins a behaviour a user would notice: a refused name, what a prune
with older_than keeps, what check mode predicts and reports, what
vm_snapshot_info returns. Against libvirt's in-process test:///default driver
(fixtures in conftest.py), the domain observed through libvirt itself.
"""

from __future__ import annotations

import pytest

libvirt = pytest.importorskip('libvirt')
pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (  # noqa: E402
    InvalidInput,
    SnapshotNotFound,
    parse_xml,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._snapshot import (  # noqa: E402
    Snapshot,
    SnapshotTree,
    check_name,
    domain_facts,
    is_uefi,
    manage_domain,
    predict_create,
    prune_selection,
    refuse_running_uefi,
    shown,
    snapshot_exists,
)


SEED = ['apache', 'desktop-live', 'nginx', 'pkg-updated', 'wordpress']


class Params(dict):
    """vm_snapshot's parameters: an option the test does not set is unset (None), as Ansible passes it."""

    def __missing__(self, key):
        return None


def params(**given):
    result = Params(state='present', pattern='*', after_revert='snapshot', atomic=True)
    result.update(given)
    return result


def names(dom):
    return sorted(s.getName() for s in dom.listAllSnapshots(0))


def current(dom):
    return dom.snapshotCurrent(0).getName() if dom.hasCurrentSnapshot(0) else None


# ---- names: every category of character libvirt would mangle is refused

@pytest.mark.parametrize('name', ['private\ue000use', 'un\u0378assigned', 'lone\ud800surrogate'],
                         ids=['Co', 'Cn', 'Cs'])
def test_names_with_unusable_characters_are_refused(name):
    with pytest.raises(InvalidInput, match='control or unassigned character'):
        check_name(name)


@pytest.mark.parametrize('text, expected', [
    ('x' * 60, 'x' * 60),
    ('x' * 61, 'x' * 60 + '...'),
    ('a\u00a0b', 'a\\xa0b'),
])
def test_shown_cuts_after_sixty_characters_and_escapes(text, expected):
    assert shown(text) == expected


# ---- pruning by age

def test_prune_keeps_a_snapshot_exactly_as_old_as_older_than():
    tree = SnapshotTree([
        Snapshot('<domainsnapshot><name>a</name><creationTime>100</creationTime></domainsnapshot>'),
        Snapshot('<domainsnapshot><name>b</name><parent><name>a</name></parent>'
                 '<creationTime>99</creationTime></domainsnapshot>', is_current=True),
    ])
    # "older than 100 s" at 200: a (exactly 100 s old) stays, b (101 s) goes
    assert prune_selection(tree, None, '*', 100, now=200) == ['b']


@pytest.mark.parametrize('check_mode', [True, False])
def test_pruned_with_older_than_leaves_new_snapshots(seed_domain, check_mode):
    # every seed snapshot was taken seconds ago: "older than a day" matches none
    result = manage_domain(seed_domain, params(state='pruned', older_than='1d'), check_mode)
    assert result['changed'] is False
    assert result['deleted'] == []
    assert names(seed_domain) == SEED


@pytest.mark.parametrize('check_mode', [True, False])
def test_present_with_older_than_prunes_nothing_new(seed_domain, check_mode):
    result = manage_domain(seed_domain, params(name='fresh', older_than='1d', pattern='*'), check_mode)
    assert result['changed'] is True
    assert result['deleted'] == []
    assert names(seed_domain) == (SEED if check_mode else sorted(SEED + ['fresh']))


@pytest.mark.parametrize('check_mode', [True, False])
def test_present_with_keep_reports_what_it_pruned(seed_domain, check_mode):
    # the snapshot exists already: the only change is the prune
    result = manage_domain(seed_domain, params(name='wordpress', keep=4, pattern='*'), check_mode)
    assert result['changed'] is True
    assert len(result['deleted']) == 1
    assert len(names(seed_domain)) == (5 if check_mode else 4)


# ---- check mode predicts what libvirt does

def test_predicted_snapshot_has_the_facts_the_real_one_gets(seed_domain):
    tree = SnapshotTree.from_domain(seed_domain)
    predicted = predict_create(tree, 'new', 'before the upgrade', 'running', [('vda', 'internal')], 'internal',
                               now=1234567890).facts('new')
    assert predicted['description'] == 'before the upgrade'
    assert predicted['state'] == 'running'
    assert predicted['creation_epoch'] == 1234567890
    assert predicted['disks'] == [dict(name='vda', snapshot='internal')]
    assert predicted['location'] == 'internal'
    assert predicted['parent'] == 'wordpress'
    assert predicted['is_current'] is True

    seed_domain.snapshotCreateXML('<domainsnapshot><name>new</name><description>before the upgrade</description>'
                                  '</domainsnapshot>', 0)
    real = SnapshotTree.from_domain(seed_domain).facts('new')
    for key in ('name', 'description', 'state', 'parent', 'is_current', 'children', 'location'):
        assert predicted[key] == real[key], key


def test_predicted_tree_has_one_current_snapshot(seed_domain):
    tree = predict_create(SnapshotTree.from_domain(seed_domain), 'new', None, 'running', [], 'internal')
    assert tree.current == 'new'
    assert [n for n in tree.by_name if tree.by_name[n].is_current] == ['new']


def test_current_in_check_mode_reports_the_change_and_makes_none(seed_domain):
    result = manage_domain(seed_domain, params(state='current', name='apache'), True)
    assert result['changed'] is True
    assert result['snapshot']['is_current'] is True
    assert current(seed_domain) == 'wordpress'


def test_unknown_snapshot_is_named_with_its_domain(seed_domain):
    for state in ('current', 'reverted'):
        with pytest.raises(SnapshotNotFound, match="no snapshot 'nope' of domain 'test'"):
            manage_domain(seed_domain, params(state=state, name='nope'), True)
    with pytest.raises(SnapshotNotFound, match="parent 'nope'|no snapshot 'nope' of domain 'test'"):
        manage_domain(seed_domain, params(name='new', parent='nope'), True)


def test_tree_lookup_message_without_snapshots_or_domain():
    with pytest.raises(SnapshotNotFound) as err:
        SnapshotTree([]).get('x')
    assert str(err.value) == "no snapshot 'x' (snapshots: none)"


# ---- state=absent reports what it did

@pytest.mark.parametrize('check_mode', [True, False])
def test_absent_of_a_missing_snapshot_is_ok(seed_domain, check_mode):
    result = manage_domain(seed_domain, params(state='absent', name='nope'), check_mode)
    assert result['changed'] is False
    assert result['deleted'] == []
    assert names(seed_domain) == SEED


@pytest.mark.parametrize('check_mode', [True, False])
def test_absent_reports_the_deleted_snapshot(seed_domain, check_mode):
    result = manage_domain(seed_domain, params(state='absent', name='apache'), check_mode)
    assert result['changed'] is True
    assert result['deleted'] == ['apache']
    expected = SEED if check_mode else [n for n in SEED if n != 'apache']
    assert names(seed_domain) == expected


@pytest.mark.parametrize('check_mode', [True, False])
def test_absent_children_only_keeps_the_parent(seed_domain, check_mode):
    result = manage_domain(seed_domain, params(state='absent', name='desktop-live', children_only=True), check_mode)
    assert result['changed'] is True
    assert sorted(result['deleted']) == ['apache', 'nginx']
    if not check_mode:
        assert names(seed_domain) == ['desktop-live', 'pkg-updated', 'wordpress']


def test_snapshot_exists(seed_domain):
    assert snapshot_exists(seed_domain, 'apache') is True
    assert snapshot_exists(seed_domain, 'nope') is False


# ---- the tree: order and facts

def test_siblings_and_roots_go_oldest_first_not_by_name():
    def snap(name, epoch, parent=None):
        parent_xml = '<parent><name>%s</name></parent>' % parent if parent else ''
        return Snapshot('<domainsnapshot><name>%s</name>%s<creationTime>%d</creationTime></domainsnapshot>'
                        % (name, parent_xml, epoch))
    tree = SnapshotTree([snap('y-root', 1), snap('b-root', 2), snap('z', 3, 'y-root'), snap('a', 4, 'y-root')])
    assert tree.topological() == ['y-root', 'z', 'a', 'b-root']


def test_snapshot_xml_is_read_whole():
    snap = Snapshot("<domainsnapshot><name>s</name><state>shutoff</state><creationTime>42</creationTime>"
                    "<memory snapshot='no'/><disks><disk name='vda' snapshot='internal'/>"
                    "<disk name='vdb' snapshot='no'/></disks></domainsnapshot>")
    assert snap.creation_epoch == 42
    assert snap.memory == 'no'
    assert snap.disks == [dict(name='vda', snapshot='internal'), dict(name='vdb', snapshot='no')]
    assert snap.is_current is False and snap.has_metadata is True
    assert Snapshot('<domainsnapshot><name>bare</name></domainsnapshot>').creation_epoch == 0


def test_info_facts_of_a_domain(seed_domain):
    facts = domain_facts(seed_domain, {}, xml=True)
    assert facts['exists'] is True
    assert facts['state'] == 'running'
    assert facts['current_snapshot'] == 'wordpress'
    assert facts['snapshot_count'] == 5
    assert facts['tree'] == SnapshotTree.from_domain(seed_domain).render()
    assert 'disks' not in facts
    by_name = {entry['name']: entry for entry in facts['snapshots']}
    assert sorted(by_name) == SEED
    for name, entry in by_name.items():
        assert entry['xml'] == seed_domain.snapshotLookupByName(name).getXMLDesc(0)
        assert isinstance(entry['creation_epoch'], int) and entry['creation_epoch'] > 0
        assert isinstance(entry['disks'], list)
    assert 'xml' not in domain_facts(seed_domain, {})['snapshots'][0]


def test_info_of_an_unknown_snapshot_fails_for_one_domain(seed_domain):
    with pytest.raises(SnapshotNotFound, match="of domain 'test'"):
        domain_facts(seed_domain, {'name': 'nope'})
    assert domain_facts(seed_domain, {'name': 'nope'}, strict=False)['snapshots'] == []


# ---- UEFI: internal snapshots of a running UEFI domain are refused up front

@pytest.mark.parametrize('os_xml, expected', [
    ("<os><type>hvm</type></os>", False),
    ("<os firmware='efi'><type>hvm</type></os>", True),
    ("<os><type>hvm</type><loader type='pflash'>/x/OVMF_CODE.fd</loader></os>", True),
    ("<os><type>hvm</type><loader type='rom'>/x/bios.bin</loader></os>", False),
    ("", False),
])
def test_is_uefi(os_xml, expected):
    assert is_uefi(parse_xml('<domain>%s</domain>' % os_xml)) is expected


@pytest.fixture
def uefi_domain(conn):
    dom = conn.defineXML(
        "<domain type='test'><name>kvmsnap-unit-uefi</name><memory>65536</memory>"
        "<os><type>hvm</type><loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader></os>"
        "</domain>")
    yield dom
    if dom.isActive():
        dom.destroy()
    dom.undefine()


def test_running_uefi_domain_refused_for_internal_snapshots_only(uefi_domain):
    refuse_running_uefi(uefi_domain, 'kvmsnap-unit-uefi', params(disk_only=False))  # shut off: fine
    uefi_domain.create()
    refuse_running_uefi(uefi_domain, 'kvmsnap-unit-uefi', params(disk_only=True))  # external: fine
    with pytest.raises(InvalidInput, match="domain 'kvmsnap-unit-uefi' .*UEFI"):
        refuse_running_uefi(uefi_domain, 'kvmsnap-unit-uefi', params(disk_only=False))


# ---- second pass: what the first round of new tests still let through

@pytest.mark.parametrize('check_mode', [True, False])
def test_pruned_reports_and_draws_what_it_deleted(seed_domain, check_mode):
    result = manage_domain(seed_domain, params(state='pruned', keep=3), check_mode)
    assert result['changed'] is True
    assert len(result['deleted']) == 2
    for name in result['deleted']:
        assert name not in result['tree'].split()
    assert len(names(seed_domain)) == (5 if check_mode else 3)


@pytest.mark.parametrize('check_mode', [True, False])
def test_absent_children_only_of_a_leaf_is_ok(seed_domain, check_mode):
    result = manage_domain(seed_domain, params(state='absent', name='apache', children_only=True), check_mode)
    assert result['changed'] is False
    assert names(seed_domain) == SEED


def test_present_in_check_mode_predicts_description_and_state(seed_domain):
    result = manage_domain(seed_domain, params(name='new', description='before the upgrade'), True)
    assert result['changed'] is True
    assert result['snapshot']['description'] == 'before the upgrade'
    assert result['snapshot']['state'] == 'running'
    assert 'deleted' not in result and 'diff' not in result
    assert names(seed_domain) == SEED


def test_diff_mode_shows_the_tree_before_and_after(seed_domain):
    before = SnapshotTree.from_domain(seed_domain).render()
    result = manage_domain(seed_domain, params(state='absent', name='apache'), False, diff_mode=True)
    assert result['diff'] == dict(before=before, after=result['tree'], before_header='test snapshots',
                                  after_header='test snapshots')
    assert before != result['tree']


def test_a_snapshot_without_description_has_an_empty_one():
    assert Snapshot('<domainsnapshot><name>s</name></domainsnapshot>').description == ''


def test_info_of_unknown_descendants_of_names_the_domain(seed_domain):
    with pytest.raises(SnapshotNotFound, match="no snapshot 'nope' of domain 'test'"):
        domain_facts(seed_domain, {'descendants_of': 'nope'})


def test_shown_keeps_backslashes_single():
    assert shown('a\\b c') == 'a\\b c'


@pytest.fixture
def vnc_domain(conn):
    dom = conn.defineXML(
        "<domain type='test'><name>kvmsnap-unit-vnc</name><memory>65536</memory><os><type>hvm</type></os>"
        "<devices><graphics type='vnc' port='-1' autoport='yes' passwd='Rz8kQ3vX'/></devices></domain>")
    yield dom
    for snap in dom.listAllSnapshots(0):
        snap.delete(0)
    dom.undefine()


def test_snapshot_xml_for_results_hides_the_vnc_password(vnc_domain):
    vnc_domain.snapshotCreateXML('<domainsnapshot><name>s</name></domainsnapshot>', 0)
    assert 'Rz8kQ3vX' not in SnapshotTree.from_domain(vnc_domain).by_name['s'].xml
    assert 'Rz8kQ3vX' in SnapshotTree.from_domain(vnc_domain, secure=True).by_name['s'].xml
