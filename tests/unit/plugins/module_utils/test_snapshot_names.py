# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Names, keys and order (issue 14), against libvirt's in-process test:///default driver.

vm_snapshot_info keys ``domains`` by each domain's name, in the order the task names
them, a missing one in its place (and warned about); vm_snapshot's bulk ``results``
follow that order; a snapshot whose name only creation refuses (white space, made
with virsh) can still be made current, reverted to and deleted.
"""

from __future__ import annotations

import pytest

libvirt = pytest.importorskip('libvirt')
pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import InvalidInput  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._snapshot import (  # noqa: E402
    MISSING_DOMAIN,
    SnapshotTree,
    check_existing_name,
    gather_info,
    manage_snapshots,
    validate,
)
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils.test_snapshot_ops import DEFAULTS  # noqa: E402

# vm_snapshot_info's, with the test driver.
INFO = dict(uri='test:///default', domain=None, domains=None, name=None, roots=False, leaves=False,
            descendants_of=None, location=None, snapshot_state=None, sizes=False, xml=False)

SMALL = "<domain type='test'><name>%s</name><memory>8192</memory><os><type>hvm</type></os></domain>"


def snapshot_params(**given):
    result = dict(DEFAULTS, uri='test:///default', domain='test')
    result.update(given)
    return result


def run(check_mode=False, **given):
    return manage_snapshots(snapshot_params(**given), DEFAULTS, check_mode=check_mode, diff_mode=True)


def info(**given):
    return gather_info(dict(INFO, **given))


def names(dom):
    return sorted(snap.getName() for snap in dom.listAllSnapshots(0))


# ---- vm_snapshot_info: keyed by name

@pytest.mark.parametrize('option', ['domain', 'domains'])
def test_info_keys_a_uuid_by_the_domains_name(conn, option):
    uuid = conn.lookupByName('test').UUIDString()
    result = info(**{option: uuid if option == 'domain' else [uuid]})
    assert list(result['domains']) == ['test']
    assert result['domains']['test']['exists'] is True
    assert result['without_snapshots'] == ['test']
    assert 'warnings' not in result


@pytest.mark.parametrize('option', ['domain', 'domains'])
def test_info_missing_domain_is_reported_and_warned(conn, option):
    ghost = '11111111-2222-3333-4444-555555555555'  # a UUID no domain has: keyed as typed
    result = info(**{option: ghost if option == 'domain' else [ghost]})
    assert list(result['domains']) == [ghost]
    assert result['domains'][ghost]['exists'] is False and result['domains'][ghost]['snapshots'] == []
    assert result['warnings'] == [MISSING_DOMAIN % (ghost, 'test:///default')]
    assert "domain '%s' not found on test:///default" % ghost in result['warnings'][0]
    assert "virsh list --all" in result['warnings'][0]
    assert result['with_snapshots'] == [] and result['without_snapshots'] == []


def test_info_order_follows_domains_with_a_missing_one_in_place(conn, define):
    define(SMALL % 'zulu')
    alpha = define(SMALL % 'alpha')
    result = info(domains=['zulu', 'ghost', alpha.UUIDString(), 'te*', 'zulu', 'ghost'])
    assert list(result['domains']) == ['zulu', 'ghost', 'alpha', 'test']
    assert [facts['exists'] for facts in result['domains'].values()] == [True, False, True, True]
    assert result['warnings'] == [MISSING_DOMAIN % ('ghost', 'test:///default')]
    # a glob stands for its matches by name; no domain given: every domain by name
    assert list(info(domains=['*'])['domains']) == ['alpha', 'test', 'zulu']
    assert list(info()['domains']) == ['alpha', 'test', 'zulu']


# ---- vm_snapshot: bulk results in the order domains names them

def test_bulk_results_follow_domains(conn, define):
    define(SMALL % 'zulu')
    alpha = define(SMALL % 'alpha')
    result = run(domain=None, domains=['zulu', alpha.UUIDString(), 'te*'], name='bulk')
    assert [entry['domain'] for entry in result['results']] == ['zulu', 'alpha', 'test']
    assert all(entry['changed'] for entry in result['results'])
    assert [names(conn.lookupByName(name)) for name in ('zulu', 'alpha', 'test')] == [['bulk']] * 3
    again = run(domain=None, domains=['test', 'zulu', 'alpha'], name='bulk', state='absent')
    assert [entry['domain'] for entry in again['results']] == ['test', 'zulu', 'alpha']


# ---- a snapshot name only creation refuses

SPACED = 'before the update'


def test_a_snapshot_named_with_white_space_can_be_made_current_reverted_and_deleted(conn):
    dom = conn.lookupByName('test')
    # as virsh snapshot-create-as would make it
    dom.snapshotCreateXML('<domainsnapshot><name>%s</name></domainsnapshot>' % SPACED, 0)
    dom.snapshotCreateXML('<domainsnapshot><name>after</name></domainsnapshot>', 0)
    assert SnapshotTree.from_domain(dom).current == 'after'

    # creating such a name stays refused
    with pytest.raises(InvalidInput, match='holds white space'):
        run(name='another one')

    assert run(check_mode=True, name=SPACED, state='current')['changed']
    assert SnapshotTree.from_domain(dom).current == 'after'
    made = run(name=SPACED, state='current')
    assert made['changed'] and made['snapshot']['name'] == SPACED and made['snapshot']['is_current']
    assert dom.snapshotCurrent(0).getName() == SPACED
    assert not run(name=SPACED, state='current')['changed']

    run(name='after', state='current')
    reverted = run(name=SPACED, state='reverted')
    assert reverted['changed'] and reverted['snapshot']['is_current']
    assert dom.snapshotCurrent(0).getName() == SPACED

    assert run(check_mode=True, name=SPACED, state='absent')['deleted'] == [SPACED]
    assert names(dom) == ['after', SPACED]
    gone = run(name=SPACED, state='absent')
    assert gone['changed'] and gone['deleted'] == [SPACED]
    assert names(dom) == ['after']
    assert not run(name=SPACED, state='absent')['changed']


@pytest.mark.parametrize('state', ['absent', 'reverted', 'current'])
@pytest.mark.parametrize('name', ['has space', 'tab\there', '-dash', '.dot', 'a/b', 'nb\u00a0sp', 'x' * 255])
def test_existing_snapshot_states_take_any_name_libvirt_takes(state, name):
    validate(snapshot_params(name=name, state=state), DEFAULTS)


@pytest.mark.parametrize('state', ['absent', 'reverted', 'current'])
@pytest.mark.parametrize('name, message', [
    ('', 'name is empty'),
    ('x' * 256, 'name is 256 characters long: a snapshot name has at most 255'),
    ('nul\x00', "name 'nul\\x00' holds a control character that snapshot XML cannot carry"),
    ('bell\x07', "name 'bell\\x07' holds a control character"),
])
def test_existing_snapshot_states_still_refuse_impossible_names(state, name, message):
    with pytest.raises(InvalidInput) as err:
        validate(snapshot_params(name=name, state=state), DEFAULTS)
    assert message in str(err.value)
    assert '\n' not in str(err.value)


def test_check_existing_name_returns_the_name():
    assert check_existing_name(SPACED) == SPACED
