# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/hold.py (issue 16): a domain paused or shut down for the copy is given back however the copy ends,
a signal in the middle of the give-back included. Domains are libvirt's test:///default driver."""

from __future__ import annotations

import os
import signal

import pytest

pytest.importorskip('lxml')
libvirt = pytest.importorskip('libvirt')

from ansible_collections.kvm.snapshots.plugins.module_utils import _libvirt as lv  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup import hold as hold_module  # noqa: E402
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.hold import DomainHold  # noqa: E402


def test_the_hold_resumes_a_domain_paused_for_the_copy(conn, run_module):
    dom = conn.lookupByName('test')
    assert lv.domain_state(dom) == 'running'

    def work():
        hold = DomainHold(dom, 'suspend', 5)
        try:
            hold.take()
            assert lv.domain_state(dom) == 'paused'
            os.kill(os.getpid(), signal.SIGTERM)
        except BaseException as exc:
            done, error = hold.give_back()
            lv.note_undone(exc, done)
            assert error is None
            raise

    result = run_module(work)
    assert lv.domain_state(dom) == 'running'
    assert result['interrupted']['done'] == ["domain 'test' was resumed"]


def test_the_hold_starts_a_domain_shut_down_for_the_copy(conn):
    dom = conn.lookupByName('test')
    hold = DomainHold(dom, 'shutdown', 5)
    hold.take()
    assert lv.domain_state(dom) == 'shutoff'
    assert hold.give_back() == ("domain 'test' was started again", None)
    assert lv.domain_state(dom) == 'running'
    assert hold.give_back() == (None, None)  # once only


def test_a_shutdown_that_times_out_is_not_waited_for_twice(conn, monkeypatch):
    dom = conn.lookupByName('test')
    monkeypatch.setattr(hold_module, 'wait_state', lambda *args: False)  # a guest that ignores ACPI
    monkeypatch.setattr(dom, 'shutdown', lambda: None)
    hold = DomainHold(dom, 'shutdown', 1)
    with pytest.raises(lv.OperationFailed, match='did not shut down within 1 s'):
        hold.take()
    assert hold.give_back() == (None, None)
    assert lv.domain_state(dom) == 'running'


@pytest.mark.parametrize('action, call', [('suspend', 'resume'), ('shutdown', 'create')])
def test_a_signal_at_the_give_back_still_gives_the_domain_back(conn, monkeypatch, action, call):
    """The unwinding calls give_back again: a first call cut short must not have marked it done."""
    dom = conn.lookupByName('test')
    hold = DomainHold(dom, action, 5)
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
    hold = DomainHold(dom, 'shutdown', 5)
    hold.take()
    real = dom.create

    def started_then_cut():
        real()
        raise lv.Interrupted('SIGTERM')     # the call returned, the signal lands before its result is noted

    monkeypatch.setattr(dom, 'create', started_then_cut)
    with pytest.raises(KeyboardInterrupt):
        hold.give_back()
    monkeypatch.setattr(hold_module, 'wait_state', lambda *args: pytest.fail('waited for a shutdown'))
    assert hold.give_back() == ("domain 'test' was started again", None)
    assert lv.domain_state(dom) == 'running'
