# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

import pytest


def _build_seed(dom):
    """The seed's tree, the seed's way, on a test:///default domain: wordpress is current.

    pkg-updated -> desktop-live -> {apache, nginx}; pkg-updated -> wordpress.
    """
    def take(name):
        dom.snapshotCreateXML('<domainsnapshot><name>%s</name></domainsnapshot>' % name, 0)

    take('pkg-updated')
    take('desktop-live')
    take('apache')
    dom.revertToSnapshot(dom.snapshotLookupByName('desktop-live'))
    take('nginx')
    dom.revertToSnapshot(dom.snapshotLookupByName('pkg-updated'))
    take('wordpress')


@pytest.fixture
def conn():
    """libvirt's in-process test:///default driver (no daemon)."""
    libvirt = pytest.importorskip('libvirt')
    libvirt.registerErrorHandler(lambda *args: None, None)
    connection = libvirt.open('test:///default')
    yield connection
    # test:///default lives as long as the process: leave it as we found it.
    for dom in connection.listAllDomains(0):
        for snap in dom.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_ROOTS):
            snap.delete(libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN)
        for checkpoint in dom.listAllCheckpoints(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_ROOTS):
            checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_CHILDREN)
        if dom.name() != 'test':
            if dom.isActive():
                dom.destroy()
            dom.undefine()
        elif not dom.isActive():
            dom.create()
        elif dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED:
            dom.resume()
    connection.close()


@pytest.fixture
def seed_domain(conn):
    """The test driver's running domain with the seed's branched tree: wordpress is current."""
    dom = conn.lookupByName('test')
    _build_seed(dom)
    return dom


@pytest.fixture
def define(conn):
    """Define (and optionally start) an extra test:///default domain from its XML; the conn fixture removes it."""
    def make(xml, start=False):
        dom = conn.defineXML(xml)
        if start:
            dom.create()
        return dom
    return make


class _Exited(Exception):
    pass


class _FakeModule:
    """Just what run_module calls."""

    def __init__(self):
        self.result = None

    def fail_json(self, **result):
        self.result = dict(result, failed=True)
        raise _Exited()

    def exit_json(self, **result):
        self.result = result
        raise _Exited()


@pytest.fixture
def handlers():
    """run_module installs signal handlers: give pytest its own back afterwards."""
    import signal
    from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import STOP_SIGNALS
    saved = {name: signal.getsignal(getattr(signal, name)) for name in STOP_SIGNALS}
    yield
    for name, handler in saved.items():
        signal.signal(getattr(signal, name), handler)


@pytest.fixture
def run_module(handlers):
    """``run_module`` of _libvirt on a fake AnsibleModule: ``run(work)`` gives the result it exits or fails with."""
    from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import run_module as real_run_module

    def run(work):
        module = _FakeModule()
        with pytest.raises(_Exited):
            real_run_module(module, work)
        return module.result
    return run
