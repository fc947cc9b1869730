#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_snapshot_info
short_description: List libvirt/KVM domain snapshots, their tree and their facts
version_added: 1.0.0
description:
  - Reports, as data, everything C(virsh snapshot-list), C(snapshot-info), C(snapshot-current),
    C(snapshot-parent), C(snapshot-dumpxml) and C(virsh list --with-snapshot) tell.
  - Never changes anything.
  - Filters combine like virsh's flags. The RV(domains.tree) text always shows the whole tree.
author:
  - kvm.snapshots maintainers (@kvm-snapshots)
extends_documentation_fragment:
  - kvm.snapshots.connection
attributes:
  check_mode:
    support: full
    description: Runs normally in check mode; it changes nothing in any mode.
  diff_mode:
    support: none
    description: Nothing changes, so there is nothing to diff.
options:
  domain:
    description:
      - Name or UUID of one domain. It is reported under its name in RV(domains), also when given by UUID.
      - A domain that does not exist is reported with RV(domains.exists=false), keyed by what was given, and a
        warning; not as a failure.
      - Mutually exclusive with O(domains). With neither, every domain is reported.
    type: str
  domains:
    description:
      - Names, UUIDs or shell globs (V(web-*)) of domains. A glob that matches nothing is not an error.
      - RV(domains) lists them in this order, each under its name (a UUID is looked up), a glob's matches
        sorted by name, a domain named twice once. A name or UUID that matches no domain keeps its place, keyed
        by what was given, with RV(domains.exists=false) and a warning.
      - Mutually exclusive with O(domain).
    type: list
    elements: str
  name:
    description:
      - Only this snapshot (C(virsh snapshot-info)).
      - With O(domain), an unknown name fails; with O(domains) or all domains, a domain without it lists nothing.
    type: str
  roots:
    description: Only snapshots without a parent (C(virsh snapshot-list --roots)).
    type: bool
    default: false
  leaves:
    description: Only snapshots without children (C(virsh snapshot-list --leaves)).
    type: bool
    default: false
  descendants_of:
    description: Only the descendants of this snapshot (C(virsh snapshot-list --from NAME --descendants)).
    type: str
  location:
    description: Only internal or only external snapshots (C(--internal), C(--external)).
    type: str
    choices: [internal, external]
  snapshot_state:
    description: Only snapshots taken in this domain state (C(--active) is V(running), C(--inactive) is V(shutoff)).
    type: str
    choices: [running, shutoff, paused, disk-snapshot]
  sizes:
    description:
      - Also read C(qemu-img info -U) for each disk of the domain, to report the VM-state size
        of each internal snapshot (the C(VM SIZE) of C(qemu-img snapshot -l)), and each disk's
        size on disk and virtual size.
      - The image files must be readable where the module runs, so with a remote O(uri)
        run the module on the hypervisor instead.
    type: bool
    default: false
  xml:
    description:
      - Also return each snapshot's XML (C(virsh snapshot-dumpxml)), without passwords.
    type: bool
    default: false
notes:
  - Siblings in RV(domains.snapshots) are ordered oldest first; in the RV(domains.tree) text by name, as virsh draws it.
seealso:
  - module: kvm.snapshots.vm_snapshot
"""

EXAMPLES = r"""
- name: Show the snapshot tree of one domain
  kvm.snapshots.vm_snapshot_info:
    domain: web1
  register: snaps

- name: Print it the way virsh snapshot-list --tree does
  ansible.builtin.debug:
    var: snaps.domains.web1.tree_lines

- name: Which domains have snapshots at all (virsh list --with-snapshot)
  kvm.snapshots.vm_snapshot_info:
  register: all_snaps

- name: Leaves of every web server, with the VM-state size of each snapshot
  kvm.snapshots.vm_snapshot_info:
    domains: ['web-*']
    leaves: true
    sizes: true

- name: Everything below pkg-updated, against a remote hypervisor
  kvm.snapshots.vm_snapshot_info:
    uri: qemu+ssh://root@hv1.example.com/system
    domain: web1
    descendants_of: pkg-updated
"""

RETURN = r"""
domains:
  description:
    - Per domain, its snapshot facts, keyed by the domain's name, also for a domain given by UUID.
    - In the order O(domain) or O(domains) name the domains (a glob's matches sorted by name); with neither,
      every domain sorted by name.
    - A name or UUID that matches no domain is keyed by what was given, with RV(domains.exists=false).
  returned: always
  type: dict
  contains:
    exists:
      description:
        - Whether the domain exists. A name or UUID in O(domain) or O(domains) that matches no domain is
          reported with V(false) and a warning, not as a failure.
      type: bool
      sample: true
    state:
      description: The domain's state (C(virsh domstate)).
      type: str
      sample: running
    current_snapshot:
      description: Name of the current snapshot, or null.
      type: str
      sample: desktop-live
    snapshot_count:
      description: How many snapshots the domain has in all, whatever the filters.
      type: int
      sample: 5
    tree:
      description: The whole snapshot tree as text, as C(virsh snapshot-list --tree) draws it.
      type: str
      sample: "pkg-updated\n  |\n  +- desktop-live\n  |\n  +- wordpress\n    \n"
    tree_lines:
      description:
        - RV(domains.tree) as a list of lines, like C(stdout_lines), so C(ansible.builtin.debug) with C(var) shows the
          tree as virsh draws it. Empty when the domain has no snapshot.
      type: list
      elements: str
      sample: ["pkg-updated", "  |", "  +- desktop-live", "  |", "  +- wordpress", "    "]
    disks:
      description: With O(sizes), each disk's size; the image is read with C(qemu-img info -U).
      type: list
      elements: dict
      returned: when O(sizes=true)
      sample: [{"target": "vda", "path": "/var/lib/libvirt/images/web1.qcow2", "format": "qcow2",
                "virtual_size": 10737418240, "disk_size": 3706880}]
    checkpoints:
      description:
        - Names of the domain's libvirt checkpoints (C(virsh checkpoint-list --topological)), parents first; empty
          when none. Incremental backup tools such as virtnbdbackup leave them; vm_snapshot refuses reverts beside them.
      type: list
      elements: str
      sample: [virtnbdbackup.0, virtnbdbackup.1]
    backup_overlays:
      description:
        - The overlays of a live backup (M(kvm.snapshots.vm_backup) with O(kvm.snapshots.vm_backup#module:if_running=live))
          on the domain's disks, in its live or persistent definition; empty when none. While a backup runs they
          take the guest's writes; one still there after the backup ended was left by a backup that died, and
          the next backup of the domain merges it back (a warning says so). vm_snapshot refuses the domain
          meanwhile.
      type: list
      elements: dict
      sample: [{disk: vda, path: /var/lib/libvirt/images/.web1.qcow2.kvmsnap-overlay}]
      contains:
        disk:
          description: The disk's target (C(vda)).
          type: str
        path:
          description: The overlay file.
          type: str
    snapshots:
      description: The snapshots that pass the filters, in topological order (no child before its parent).
      type: list
      elements: dict
      contains:
        name:
          description: Snapshot name.
          type: str
          sample: desktop-live
        description:
          description: Snapshot description, empty when none.
          type: str
        creation_time:
          description: When it was taken, ISO 8601 with the host's UTC offset.
          type: str
          sample: "2026-11-27T01:57:56+00:00"
        creation_epoch:
          description: When it was taken, seconds since the epoch.
          type: int
        state:
          description: The domain state it recorded (V(running), V(shutoff), V(paused), V(disk-snapshot)).
          type: str
        location:
          description: V(internal) (inside the disk images) or V(external) (overlay files).
          type: str
        parent:
          description: Parent snapshot name, null for a root.
          type: str
        children:
          description: Names of the direct children, sorted.
          type: list
          elements: str
        children_count:
          description: Number of direct children.
          type: int
        descendants_count:
          description: Number of all descendants.
          type: int
        is_current:
          description: Whether this is the current snapshot.
          type: bool
        has_metadata:
          description: Whether libvirt holds metadata for it.
          type: bool
        disks:
          description: Each disk's name and snapshot kind (V(internal), V(external), V(no)).
          type: list
          elements: dict
        vm_state_size:
          description: With O(sizes), bytes of saved VM (memory) state; 0 for a disk-only snapshot.
          type: int
          returned: when O(sizes=true)
        disk_sizes:
          description: With O(sizes), per disk target the VM-state size in that image's snapshot table (null when absent).
          type: dict
          returned: when O(sizes=true)
        xml:
          description: With O(xml), the snapshot XML without passwords.
          type: str
          returned: when O(xml=true)
with_snapshots:
  description: Reported domains that have at least one snapshot (C(virsh list --with-snapshot)).
  returned: always
  type: list
  elements: str
without_snapshots:
  description: Reported domains that exist and have no snapshot (C(virsh list --without-snapshot)).
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import CONNECTION_ARGSPEC, run_module
from ansible_collections.kvm.snapshots.plugins.module_utils._snapshot import gather_info


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONNECTION_ARGSPEC,
            domain=dict(type='str'),
            domains=dict(type='list', elements='str'),
            name=dict(type='str'),
            roots=dict(type='bool', default=False),
            leaves=dict(type='bool', default=False),
            descendants_of=dict(type='str'),
            location=dict(type='str', choices=['internal', 'external']),
            snapshot_state=dict(type='str', choices=['running', 'shutoff', 'paused', 'disk-snapshot']),
            sizes=dict(type='bool', default=False),
            xml=dict(type='bool', default=False),
        ),
        mutually_exclusive=[('domain', 'domains')],
        supports_check_mode=True,
    )
    run_module(module, lambda: gather_info(module.params))


if __name__ == '__main__':
    main()
