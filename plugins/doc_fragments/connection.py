# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations


class ModuleDocFragment:

    DOCUMENTATION = r"""
options:
  uri:
    description:
      - The libvirt connection URI.
      - Any URI libvirt accepts works, for example C(qemu+ssh://root@host/system) to manage a remote
        hypervisor from the controller.
      - When not set, the environment variable E(LIBVIRT_DEFAULT_URI) is used, then C(qemu:///system).
    type: str
    default: qemu:///system
attributes:
  action_group:
    support: full
    membership:
      - kvm.snapshots.kvm
    description:
      - Use C(group/kvm.snapshots.kvm) in C(module_defaults) to set O(uri), or any option the modules share,
        once for every module of the collection.
requirements:
  - libvirt-python (or the distribution package C(python3-libvirt); the module re-spawns itself
    under the system Python when only that one can import C(libvirt))
  - lxml (or C(python3-lxml))
"""
