# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""The snapshot tree against libvirt's in-process test:///default driver (no daemon)."""

from __future__ import annotations

import pytest

libvirt = pytest.importorskip('libvirt')

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import SnapshotNotFound  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._snapshot import (  # noqa: E402
    Snapshot,
    SnapshotTree,
    domain_facts,
    gather_info,
    manage_snapshots,
    select,
)
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils.test_snapshot_ops import DEFAULTS  # noqa: E402

# What `virsh snapshot-list --tree` printed for the seed's tree on libvirt 9.0 (its final blank line dropped).
SEED_TREE = (
    "pkg-updated\n"
    "  |\n"
    "  +- desktop-live\n"
    "  |   |\n"
    "  |   +- apache\n"
    "  |   +- nginx\n"
    "  |     \n"
    "  +- wordpress\n"
    "    \n"
)


def test_render_matches_virsh(seed_domain):
    assert SnapshotTree.from_domain(seed_domain).render() == SEED_TREE


def test_structure(seed_domain):
    tree = SnapshotTree.from_domain(seed_domain)
    assert len(tree) == 5
    assert tree.roots() == ['pkg-updated']
    assert tree.leaves() == ['apache', 'nginx', 'wordpress']
    assert tree.by_name['pkg-updated'].children == ['desktop-live', 'wordpress']
    assert sorted(tree.descendants('desktop-live')) == ['apache', 'nginx']
    assert tree.ancestors('nginx') == ['desktop-live', 'pkg-updated']
    assert tree.current == 'wordpress'


def test_topological_puts_parents_first(seed_domain):
    tree = SnapshotTree.from_domain(seed_domain)
    order = tree.topological()
    assert sorted(order) == sorted(tree.by_name)
    for name in order:
        parent = tree.by_name[name].parent
        if parent is not None:
            assert order.index(parent) < order.index(name)


def test_facts(seed_domain):
    facts = SnapshotTree.from_domain(seed_domain).facts('desktop-live')
    assert facts['parent'] == 'pkg-updated'
    assert facts['children'] == ['apache', 'nginx']
    assert facts['children_count'] == 2
    assert facts['descendants_count'] == 2
    assert facts['is_current'] is False
    assert facts['has_metadata'] is True
    assert facts['state'] == 'running'
    assert facts['location'] == 'internal'
    assert facts['creation_time'][-6] in '+-'  # ISO 8601 with an offset


@pytest.mark.parametrize('filters, expected', [
    (dict(roots=True), ['pkg-updated']),
    (dict(leaves=True), ['apache', 'nginx', 'wordpress']),
    (dict(descendants_of='desktop-live'), ['apache', 'nginx']),
    (dict(name='nginx'), ['nginx']),
    (dict(location='external'), []),
    (dict(snapshot_state='running', leaves=True), ['apache', 'nginx', 'wordpress']),
])
def test_select(seed_domain, filters, expected):
    tree = SnapshotTree.from_domain(seed_domain)
    assert sorted(select(tree, **filters)) == expected


def test_unknown_snapshot_names_the_choices(seed_domain):
    tree = SnapshotTree.from_domain(seed_domain)
    with pytest.raises(SnapshotNotFound) as err:
        select(tree, name='nope', domain_name='test')
    assert str(err.value) == ("no snapshot 'nope' of domain 'test' "
                              "(snapshots: apache, desktop-live, nginx, pkg-updated, wordpress)")


def test_domain_facts_bulk_is_lenient(seed_domain):
    facts = domain_facts(seed_domain, dict(name='nope'), strict=False)
    assert facts['snapshots'] == [] and facts['snapshot_count'] == 5
    with pytest.raises(SnapshotNotFound):
        domain_facts(seed_domain, dict(name='nope'), strict=True)


def test_deep_chain_renders_without_recursion():
    """A chain deeper than Python's recursion limit (bulk users keep hundreds of snapshots)."""
    depth = 1500
    snaps = [Snapshot('<domainsnapshot><name>s%04d</name>%s<creationTime>%d</creationTime></domainsnapshot>'
                      % (i, '<parent><name>s%04d</name></parent>' % (i - 1) if i else '', i))
             for i in range(depth)]
    tree = SnapshotTree(snaps)
    text = tree.render()
    assert text.splitlines()[-2].endswith('+- s%04d' % (depth - 1))
    assert tree.topological() == ['s%04d' % i for i in range(depth)]
    assert tree.descendants_count('s0000') == depth - 1


def test_external_location():
    snap = Snapshot('<domainsnapshot><name>ext</name><state>disk-snapshot</state>'
                    '<disks><disk name="vda" snapshot="external"/></disks></domainsnapshot>')
    assert snap.location == 'external'


# ---- tree_lines: the text tree as a list of lines, like stdout_lines

def assert_tree_lines(entry):
    assert isinstance(entry['tree_lines'], list)
    assert entry['tree_lines'] == entry['tree'].splitlines()


def test_info_returns_tree_lines(seed_domain):
    facts = domain_facts(seed_domain, {})
    assert_tree_lines(facts)
    assert facts['tree_lines'] == [
        'pkg-updated',
        '  |',
        '  +- desktop-live',
        '  |   |',
        '  |   +- apache',
        '  |   +- nginx',
        '  |     ',
        '  +- wordpress',
        '    ',
    ]


def test_info_tree_lines_for_every_domain_missing_ones_too(seed_domain):
    info = gather_info(dict(uri='test:///default', domain=None, domains=['test', 'ghost'], name=None, roots=False,
                            leaves=False, descendants_of=None, location=None, snapshot_state=None, sizes=False,
                            xml=False))
    assert_tree_lines(info['domains']['test'])
    assert info['domains']['test']['tree_lines'][0] == 'pkg-updated'
    assert info['domains']['ghost']['tree_lines'] == []


@pytest.mark.parametrize('check_mode', [True, False])
def test_vm_snapshot_returns_tree_lines(seed_domain, check_mode):
    one = manage_snapshots(dict(DEFAULTS, uri='test:///default', domain='test', name='after-wordpress'), DEFAULTS,
                           check_mode=check_mode)
    assert_tree_lines(one)
    assert one['tree_lines'][-4:] == ['  +- wordpress', '      |', '      +- after-wordpress', '        ']
    many = manage_snapshots(dict(DEFAULTS, uri='test:///default', domains=['test'], name='after-wordpress'),
                            DEFAULTS, check_mode=check_mode)
    assert_tree_lines(many['results'][0])
    gone = manage_snapshots(dict(DEFAULTS, uri='test:///default', domain='test', name='pkg-updated', state='absent',
                                 children=True), DEFAULTS, check_mode=check_mode)
    assert gone['tree'] == ''
    assert gone['tree_lines'] == []
