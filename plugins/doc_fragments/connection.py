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
      - M(kvm.snapshots.vm_backup) reads and writes the disk images where it runs, so with O(kvm.snapshots.vm_backup#module:state=present)
        and O(kvm.snapshots.vm_backup#module:state=restored) it refuses a URI (given, or from E(LIBVIRT_DEFAULT_URI)) that may name
        another host, that is one with a host part other than C(localhost), C(127.0.0.1) or C([::1]) (with a port,
        those count as another host too, since a port usually means a tunnel), the C(ext) transport, an alias or an
        empty URI. C(qemu:///system),
        C(qemu:///session), C(qemu+unix:///system) and the like are accepted; run the task on the hypervisor
        (its inventory host, or C(delegate_to)) instead of pointing it at a remote one.
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
