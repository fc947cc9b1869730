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
def build_seed():
    return _build_seed
