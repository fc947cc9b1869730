# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_libvirt.remote_uri_problem: which URIs name this machine's own hypervisor (issue 15), told from the text alone."""

from __future__ import annotations

import pytest

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import is_local_uri, remote_uri_problem


@pytest.mark.parametrize('uri', [
    'qemu:///system', 'qemu:///session', 'test:///default', 'qemu+unix:///system',
    'qemu+unix:///system?socket=/run/libvirt/libvirt-sock', 'qemu+ssh:///system',
    'qemu+tcp://localhost/system', 'qemu+ssh://root@localhost/system', 'qemu+tls://127.0.0.1/system',
    'qemu+tcp://[::1]/system', 'qemu://LOCALHOST/system',
])
def test_local(uri):
    assert remote_uri_problem(uri) is None
    assert is_local_uri(uri)


@pytest.mark.parametrize('uri, problem', [
    ('qemu+ssh://root@hv1/system', 'qemu+ssh://root@hv1/system names the host hv1'),
    ('qemu+tcp://hv1.example.com/system', 'qemu+tcp://hv1.example.com/system names the host hv1.example.com'),
    ('qemu+tls://10.0.0.5:16514/system', 'qemu+tls://10.0.0.5:16514/system names the host 10.0.0.5:16514'),
    ('qemu://hv1/system', 'qemu://hv1/system names the host hv1'),
    ('qemu+ssh://root@localhost:2222/system', 'names the host localhost:2222'),
    ('qemu+tcp://127.0.0.2/system', 'names the host 127.0.0.2'),
    ('qemu+ext:///system?command=/opt/tunnel', 'uses the ext transport'),
    ('hv1', "'hv1' is not a full URI: an alias or an empty URI may name another host"),
    ('', 'an empty uri is not a full URI'),
    (None, 'an empty uri is not a full URI'),
    ('qemu+tcp://hv1:port/system', 'has a host part that cannot be read'),
])
def test_remote(uri, problem):
    assert problem in remote_uri_problem(uri)
    assert not is_local_uri(uri)
