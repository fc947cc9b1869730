# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""Issue 16: SIGTERM and SIGHUP unwind like Ctrl-C, through every rollback, and the
module says what it undid; a restore names what an interrupted one set aside.

Real signals are sent to this process; domains are libvirt's test:///default driver.
The integration target sends them to the real module in the middle of a copy.
"""

from __future__ import annotations

import datetime
import os
import signal
import time

import pytest

pytest.importorskip('lxml')
libvirt = pytest.importorskip('libvirt')

from ansible_collections.kvm.snapshots.plugins.module_utils import _backup as bk  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils import _libvirt as lv  # noqa: E402


class Exited(Exception):
    pass


class FakeModule:
    """Just what run_module calls."""

    def __init__(self):
        self.result = None

    def fail_json(self, **result):
        self.result = dict(result, failed=True)
        raise Exited()

    def exit_json(self, **result):
        self.result = result
        raise Exited()


@pytest.fixture
def handlers():
    """run_module installs signal handlers: give pytest its own back afterwards."""
    saved = {name: signal.getsignal(getattr(signal, name)) for name in lv.STOP_SIGNALS}
    yield
    for name, handler in saved.items():
        signal.signal(getattr(signal, name), handler)


def run(work):
    module = FakeModule()
    with pytest.raises(Exited):
        lv.run_module(module, work)
    return module.result


@pytest.mark.parametrize('signame', ['SIGTERM', 'SIGHUP', 'SIGINT'])
def test_a_stop_signal_runs_the_rollbacks_and_says_what_they_did(handlers, signame):
    undone = []

    def work():
        try:
            os.kill(os.getpid(), getattr(signal, signame))
            raise AssertionError('the signal did not interrupt')
        except BaseException as exc:
            undone.append(type(exc))
            lv.note_undone(exc, 'the thing was put back')
            raise

    result = run(work)
    assert undone and issubclass(undone[0], KeyboardInterrupt)
    assert result['failed'] is True
    assert result['msg'] == 'interrupted by %s: the thing was put back' % signame
    assert result['interrupted'] == dict(signal=signame, done=['the thing was put back'])


def test_a_second_signal_does_not_cut_the_cleanup_short(handlers):
    cleaned = []

    def work():
        try:
            os.kill(os.getpid(), signal.SIGTERM)
        finally:
            os.kill(os.getpid(), signal.SIGTERM)  # systemd may send it again: ignored now
            cleaned.append(True)

    result = run(work)
    assert cleaned == [True]
    assert result['msg'] == ('interrupted by SIGTERM: the operation under way may have completed; '
                             'nothing needed undoing')


def test_a_normal_run_is_untouched(handlers):
    assert run(lambda: dict(changed=False, x=1)) == dict(changed=False, x=1)


def test_the_hold_resumes_a_domain_paused_for_the_copy(conn, handlers):
    dom = conn.lookupByName('test')
    assert lv.domain_state(dom) == 'running'

    def work():
        hold = bk.DomainHold(dom, 'suspend', 5)
        try:
            hold.take()
            assert lv.domain_state(dom) == 'paused'
            os.kill(os.getpid(), signal.SIGTERM)
        except BaseException as exc:
            done, error = hold.give_back()
            lv.note_undone(exc, done)
            assert error is None
            raise

    result = run(work)
    assert lv.domain_state(dom) == 'running'
    assert result['interrupted']['done'] == ["domain 'test' was resumed"]


def test_the_hold_starts_a_domain_shut_down_for_the_copy(conn, handlers):
    dom = conn.lookupByName('test')
    hold = bk.DomainHold(dom, 'shutdown', 5)
    hold.take()
    assert lv.domain_state(dom) == 'shutoff'
    assert hold.give_back() == ("domain 'test' was started again", None)
    assert lv.domain_state(dom) == 'running'
    assert hold.give_back() == (None, None)  # once only


def test_a_signal_in_the_middle_of_writing_removes_the_partial_backup(tmp_path, handlers, monkeypatch):
    disk = tmp_path / 'unit1.raw'
    disk.write_bytes(b'\xaa' * (2 << 20))
    dest = tmp_path / 'dest'
    dest.mkdir()

    class Tree:
        by_name = {}

    plan = bk.Plan.__new__(bk.Plan)
    plan.name, plan.uuid = 'unit1', '6f1c5c33-8d3e-4a53-b0a4-63e3c4c0e0a1'
    plan.xml = "<domain><name>unit1</name><uuid>%s</uuid></domain>" % plan.uuid
    plan.tree, plan.order, plan.current, plan.autostart = Tree(), [], None, False
    plan.files, plan.by_path, plan.warnings, plan.tpm_dirs = [], {}, [], []
    plan.versions = dict(libvirt='9.0.0', qemu='7.2.0', hostname='unit')
    plan._add_plain(str(disk), 'disk', target='vda', fmt='raw')
    real_update = bk.ContentDigest.update
    partials = []

    def hash_then_signal(self, *args):
        # The first piece of the disk: the partial backup exists by then (the XML is hashed before).
        if not partials and self.size == 2 << 20:
            partials.extend(n for n in os.listdir(dest) if '.partial-' in n)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_update(self, *args)

    monkeypatch.setattr(bk.ContentDigest, 'update', hash_then_signal)
    when = datetime.datetime(2026, 11, 27, 2, 3, 4, tzinfo=datetime.timezone.utc)
    params = dict(format='archive', compression='none', compression_level=None, threads=0, if_running='fail')
    result = run(lambda: bk._write_backup(plan, str(dest), bk.backup_name('unit1', when, plan.uuid), '.tar', 'none',
                                          3, params, when, 'shutoff'))
    assert len(partials) == 1
    assert os.listdir(dest) == []
    assert result['interrupted'] == dict(signal='SIGTERM',
                                         done=['the partial backup %s was removed' % (dest / partials[0])])


def test_test_pause_is_inert_unless_named(monkeypatch, tmp_path):
    monkeypatch.delenv(bk.PAUSE_ENV, raising=False)
    bk.test_pause('restore-commit')
    monkeypatch.setenv(bk.PAUSE_ENV, 'another-point:%s' % (tmp_path / 'flag'))
    bk.test_pause('restore-commit')
    assert not (tmp_path / 'flag').exists()


def test_leftovers_of_an_interrupted_restore_are_found_beside_the_files(tmp_path):
    images = tmp_path / 'images'
    images.mkdir()
    (images / 'web1.qcow2').touch()
    (images / ('.web1.qcow2' + bk.REPLACED + 'ab12cd34')).touch()
    (images / ('.web1.xml' + bk.REPLACED + 'ef56ab78')).touch()
    (images / ('.web1.qcow2' + bk.RESTORING + 'aa11bb22')).touch()  # a staged file: not a leftover of data
    (images / ('.web1.snapshot-001-s1-current.xml' + bk.REPLACED + 'ef56ab78')).touch()
    (images / 'web1.qcow2.kvmsnap-replaced-not-hidden').touch()
    (images / ('.db1.qcow2' + bk.REPLACED + 'cd34ef56')).touch()    # another domain's: not this restore's to name
    (images / ('.db1.xml' + bk.REPLACED + 'cd34ef56')).touch()
    found = bk.set_aside_leftovers([str(images / 'web1.qcow2'), str(tmp_path / 'nowhere' / 'x')], ['web1'])
    assert found == sorted([str(images / ('.web1.qcow2' + bk.REPLACED + 'ab12cd34')),
                            str(images / ('.web1.xml' + bk.REPLACED + 'ef56ab78')),
                            str(images / ('.web1.snapshot-001-s1-current.xml' + bk.REPLACED + 'ef56ab78'))])


def test_a_plain_keyboard_interrupt_reports_what_was_undone_too(handlers):
    def work():
        try:
            raise KeyboardInterrupt()
        except BaseException as exc:
            lv.note_undone(exc, 'the thing was put back')
            raise

    result = run(work)
    assert result['msg'] == 'interrupted by SIGINT: the thing was put back'
    assert result['interrupted'] == dict(signal='SIGINT', done=['the thing was put back'])


def test_a_shutdown_that_times_out_is_not_waited_for_twice(conn, monkeypatch):
    dom = conn.lookupByName('test')
    monkeypatch.setattr(bk, '_wait_state', lambda *args: False)  # a guest that ignores ACPI
    monkeypatch.setattr(dom, 'shutdown', lambda: None)
    hold = bk.DomainHold(dom, 'shutdown', 1)
    with pytest.raises(lv.OperationFailed, match='did not shut down within 1 s'):
        hold.take()
    assert hold.give_back() == (None, None)
    assert lv.domain_state(dom) == 'running'


def test_bulk_work_stops_at_sigterm_and_names_the_untouched_domains(handlers):
    """A bulk vm_snapshot that gets SIGTERM touches no domain still queued, and says which."""
    touched = []

    def work(label, _item):
        touched.append(label)
        if label == 'web-1':
            time.sleep(0.2)  # the main thread has queued the others and waits for results
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)  # the main thread takes the signal and cancels the queue meanwhile
        return dict(domain=label, changed=True)

    items = [('web-%d' % n, None) for n in range(1, 5)]
    result = run(lambda: lv.for_each(items, work, workers=1))
    assert touched == ['web-1']
    assert result['failed'] and result['interrupted']['signal'] == 'SIGTERM'
    assert result['msg'] == ('interrupted by SIGTERM: the 3 domain(s) still queued were not touched: '
                             'web-2, web-3, web-4')
    assert result['results'] == [dict(domain='web-1', changed=True)]   # what was done before the signal
    assert result['changed'] is True
