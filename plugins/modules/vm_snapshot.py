#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_snapshot
short_description: Create, delete, revert to, select and prune libvirt/KVM domain snapshots
version_added: 1.0.0
description:
  - Manages the snapshots of one domain (O(domain)), or of many in one task (O(domains), names and shell globs,
    worked on in parallel), the way C(virsh snapshot-create-as), C(snapshot-delete), C(snapshot-revert),
    C(snapshot-current) and C(snapshot-edit) do, but idempotently.
  - O(state=present) on a snapshot that exists changes nothing (except a differing O(description), which is
    updated in place); O(state=absent) on a snapshot that does not exist changes nothing.
  - O(state=reverted) always reports C(changed). A revert throws away everything the domain did since the
    snapshot (disk writes, and the running state when the snapshot holds memory); there is no way back
    unless you took another snapshot first.
  - Every input is checked before libvirt is called; a refused input changes nothing.
  - What libvirt or QEMU would refuse only once under way, or would let through and lose data with, is refused
    first, the same in check mode as for real, so check mode tells the truth; see the notes.
  - Two runs creating the same snapshot at the same time end with one snapshot, and neither fails.
author:
  - kvm.snapshots maintainers (@kvm-snapshots)
extends_documentation_fragment:
  - kvm.snapshots.connection
attributes:
  check_mode:
    support: full
    description: Reports what would change, predicted by libvirt's own rules, and changes nothing.
  diff_mode:
    support: full
    description:
      - The snapshot tree before and after, as text like C(virsh snapshot-list --tree) draws it, followed by a
        line for each change the tree cannot show.
      - 'C(current snapshot: "NAME") when the current snapshot changes (V(none) when there is none);
        C(description of "NAME": "TEXT") for a description edited in place; for O(state=reverted), C(domain state:)
        before and after the revert, as C(virsh domstate) names it, with the snapshot reverted to.'
      - Names and descriptions in these lines are quoted as JSON strings.
options:
  domain:
    description:
      - Name or UUID of the domain.
      - Exactly one of O(domain) and O(domains) is required.
    type: str
  domains:
    description:
      - Names, UUIDs or shell globs (V(web-*), V(*)) of domains; the work runs for each of them in parallel.
      - A glob that matches nothing is a warning. A name or UUID that matches no domain fails the task before
        any domain is touched (in check mode too), naming every missing one.
      - Once the work has started, one failing domain fails the task and RV(results) holds every domain's outcome.
    type: list
    elements: str
  name:
    description:
      - The snapshot's name. Required for every O(state) except V(pruned), and V(absent) with O(all=true),
        where it is refused.
      - Refused when empty or longer than 255 characters.
      - With O(state=present), where it names a new snapshot, also refused when it holds white space, control
        characters or V(/), or starts with V(.) or V(-).
      - The other states take any name an existing snapshot can have, so a snapshot named otherwise (with
        C(virsh snapshot-create-as), for example with a space) can still be made current, reverted to and deleted.
    type: str
  state:
    description:
      - V(present) takes the snapshot when it does not exist (C(virsh snapshot-create-as)), then prunes when
        O(keep) or O(older_than) is set.
      - V(absent) deletes it (C(virsh snapshot-delete)); its children move up to its parent. With O(all=true),
        every snapshot of the domain (that matches O(pattern)) is deleted instead.
      - V(reverted) reverts the domain to it (C(virsh snapshot-revert)). Always C(changed).
      - V(current) makes it the current snapshot, the parent of the next one, without reverting
        (C(virsh snapshot-current DOMAIN NAME)).
      - V(pruned) deletes old snapshots, see O(keep), O(pattern) and O(older_than).
    type: str
    choices: [present, absent, reverted, current, pruned]
    default: present
  description:
    description:
      - O(state=present) only. The snapshot's description.
      - When the snapshot exists with another description, the description is changed in place (C(changed)),
        as C(virsh snapshot-edit) would; nothing else of the snapshot changes.
      - Not set, an existing snapshot's description is left alone.
    type: str
  parent:
    description:
      - O(state=present) only. Make the new snapshot a child of this existing snapshot, by making it current
        first (the branching recipe of C(virsh snapshot-current DOMAIN PARENT) then C(snapshot-create-as)).
      - This sets the place of the snapshot in the tree only; the snapshot holds the domain's disks and state
        as they are now. Revert to the parent first (O(state=reverted)) to branch from its content.
      - Has no effect when the snapshot exists already.
    type: str
  disk_only:
    description:
      - O(state=present) only. An external, disk-only snapshot (C(--disk-only)) without memory state;
        libvirt creates an overlay file next to each disk and the domain writes there from then on.
      - The one way to snapshot a running UEFI domain. libvirt older than 9.9 cannot revert to it.
    type: bool
    default: false
  quiesce:
    description:
      - O(state=present) only. Freeze the guest's file systems for the snapshot (C(--quiesce)).
      - Needs O(disk_only=true) and the QEMU guest agent running in the guest.
    type: bool
    default: false
  halt:
    description:
      - O(state=present) only. Shut the domain off once the snapshot is taken (C(--halt)).
    type: bool
    default: false
  live:
    description:
      - O(state=present) only. Take the snapshot while the guest keeps running (C(--live)).
      - QEMU does this only for snapshots with an external memory image, which this module does not make,
        so with QEMU libvirt refuses it; the flag is passed on for drivers that accept it.
      - Excludes O(disk_only).
    type: bool
    default: false
  atomic:
    description:
      - O(state=present) only. All disks are snapshotted, or none (C(--atomic)).
    type: bool
    default: true
  all:
    description:
      - O(state=absent) only. Delete every snapshot of the domain, or with O(pattern) every one whose name
        matches, oldest first (each one's children move up, so the tree stays whole until it is empty).
        C(ok) when there is none.
      - This is the way to remove all snapshots; O(keep) never deletes them all.
      - Excludes O(name), O(children) and O(children_only); with O(metadata_only) only libvirt's metadata goes.
    type: bool
    default: false
  children:
    description:
      - O(state=absent) only. Delete the snapshot and all its descendants (C(--children)).
      - Excludes O(children_only).
    type: bool
    default: false
  children_only:
    description:
      - O(state=absent) only. Delete the snapshot's descendants and keep the snapshot (C(--children-only)).
      - C(ok) when it has none.
    type: bool
    default: false
  metadata_only:
    description:
      - O(state=absent) only. Delete libvirt's metadata only and leave the snapshot's data in the disk
        images (C(--metadata)), for example to move a domain to another host.
    type: bool
    default: false
  after_revert:
    description:
      - O(state=reverted) only. The domain's state after the revert.
      - V(snapshot) is the state the snapshot recorded (running, paused or shut off).
      - V(running) (C(--running)) starts it, V(paused) (C(--paused)) starts it paused.
    type: str
    choices: [snapshot, running, paused]
    default: snapshot
  force:
    description:
      - O(state=reverted) only. Revert even where libvirt sees a risk (C(--force)), for example when the
        snapshot's domain definition is not compatible with the running domain.
    type: bool
    default: false
  reset_nvram:
    description:
      - O(state=reverted) only. Re-create the UEFI variable store from its template (C(--reset-nvram)).
      - libvirt re-creates it when the revert starts the domain (a snapshot of a running or paused domain, or
        O(after_revert=running) or V(paused)). A revert that leaves the domain shut off does not touch the NVRAM;
        the module warns then.
      - Needs a libvirt-python that knows the flag; refused with a clear message otherwise.
    type: bool
    default: false
  keep:
    description:
      - O(state=pruned), and O(state=present) after creating. Keep this many newest snapshots whose name
        matches O(pattern); the older ones are deleted, oldest first (each one's children move up to its parent).
      - V(N) keeps the newest V(N) (1 or more); with O(state=present) the new snapshot counts as the newest.
        V(0) is refused (to delete every snapshot, use O(state=absent) with O(all=true)). Not set, none is
        deleted for being too many (keep all); O(older_than) may still delete old ones.
      - Newest by creation time; snapshots taken within the same second are ordered by their place in the
        tree (a child is newer than its parent).
    type: int
  pattern:
    description:
      - O(state=pruned), O(state=present) with O(keep) or O(older_than), and O(state=absent) with O(all=true).
        Shell glob on snapshot names; only matching snapshots are counted and deleted.
    type: str
    default: '*'
  older_than:
    description:
      - O(state=pruned), and O(state=present) after creating. Delete only snapshots older than this,
        a number and a unit, V(s), V(m), V(h), V(d) or V(w) (V(30m), V(12h), V(7d), V(1d12h)).
      - With O(keep), the O(keep) newest stay whatever their age.
    type: str
notes:
  - With O(domains), each domain's outcome is in RV(results); the task fails when any domain failed.
  - Internal snapshots (the default) need qcow2 disks. A domain with a raw disk is refused before libvirt is
    called, naming the disk; use O(disk_only=true), or convert the disk to qcow2.
  - An active (running or paused) domain with UEFI (pflash) firmware cannot take an internal snapshot; the module
    says so before calling libvirt, naming the domain's state. Shut it down first, or use O(disk_only=true).
  - Mixed internal and external snapshots. After an external (O(disk_only)) snapshot the old image is the
    backing file of the overlay; reverting to an internal snapshot inside that old image would rewind the data
    the overlay and every snapshot in it read through it, corrupting them silently (libvirt does not stop it).
    Such a revert is refused, naming the images that depend on it. Merge them first (C(virsh blockcommit) while
    the domain runs, C(qemu-img commit) while it is shut off) or delete them. The module finds them from
    libvirt's view (the domain's disks and every snapshot's) and their backing chains (C(qemu-img info -U
    --backing-chain)), so it must run where the images are (with a remote O(uri) it is skipped, with a warning).
  - libvirt older than 9.9 cannot revert to an external (O(disk_only)) snapshot at all.
  - Checkpoints (libvirt's incremental backup API, left by tools such as virtnbdbackup) keep dirty bitmaps in
    the qcow2 images. QEMU cannot load an internal snapshot beside them, and libvirt's failed revert stops a
    running domain. libvirt creates no snapshot, sets no current snapshot and edits no description of a shut-off
    domain that has checkpoints (while it runs, it does). All of these are refused before libvirt is called,
    naming the checkpoints and the bitmaps. Deleting them breaks the other tool's incremental chain, so the
    module never does; C(virsh checkpoint-delete) is your decision.
  - Should a revert of a running domain still fail and leave it shut off, the module starts it again and says so.
  - Free space is checked before a new snapshot, and a snapshot that would not fit is refused before libvirt is
    called (nothing changes; with O(domains) it is that domain's failure in RV(results)). An internal snapshot of
    an active (running or paused) domain saves the guest's memory state into the first writable qcow2 disk of the
    domain (QEMU's choice; libvirt keeps the disks sorted by bus and target, so usually C(vda)); its file system
    needs the guest's memory and video memory plus a margin of 64 MiB or 5 %, whichever is more (the state is
    often smaller, since pages of zeros cost nothing, but never larger). A snapshot of a shut-off domain and an
    external O(disk_only) one write metadata or a small overlay beside each disk; they need 1 MiB on each file
    system. With a remote O(uri) the images are not here to look at, and libvirt reports a full disk itself.
  - A snapshot holds the domain definition of its time; reverting to it brings that definition back.
seealso:
  - module: kvm.snapshots.vm_snapshot_info
  - name: libvirt snapshot XML format
    description: What libvirt records in each snapshot.
    link: https://libvirt.org/formatsnapshot.html
"""

EXAMPLES = r"""
- name: Snapshot a shut-off domain after updating its packages
  kvm.snapshots.vm_snapshot:
    domain: debian
    name: pkg-updated
    description: All packages updated

- name: Snapshot the running domain, memory included
  kvm.snapshots.vm_snapshot:
    domain: debian
    name: desktop-live
    description: Xfce desktop installed

- name: Go back to it and keep the domain running
  kvm.snapshots.vm_snapshot:
    domain: debian
    name: desktop-live
    state: reverted
    after_revert: running

- name: Branch - a wordpress snapshot as a child of pkg-updated
  kvm.snapshots.vm_snapshot:
    domain: debian
    name: wordpress
    parent: pkg-updated

- name: Make nginx the current snapshot without reverting
  kvm.snapshots.vm_snapshot:
    domain: debian
    name: nginx
    state: current

- name: Delete desktop-live with everything below it
  kvm.snapshots.vm_snapshot:
    domain: debian
    name: desktop-live
    state: absent
    children: true

- name: Before patching, snapshot every web server and keep the 3 newest pre-patch snapshots
  kvm.snapshots.vm_snapshot:
    domains: ['web-*']
    name: "pre-patch-{{ now(utc=true).strftime('%Y-%m-%d') }}"
    keep: 3
    pattern: 'pre-patch-*'
  register: snap

- name: Show each web server's outcome
  ansible.builtin.debug:
    msg: "{{ snap.results | items2dict(key_name='domain', value_name='changed') }}"

- name: Delete nightly snapshots older than a week on the web and database servers
  kvm.snapshots.vm_snapshot:
    domains: ['web-*', 'db-*']
    state: pruned
    pattern: 'nightly-*'
    older_than: 7d

- name: Delete every snapshot of the test domains
  kvm.snapshots.vm_snapshot:
    domains: ['test-*']
    state: absent
    all: true

- name: A running UEFI domain - external disk-only snapshot, guest file systems frozen
  kvm.snapshots.vm_snapshot:
    domain: win11
    name: before-update
    disk_only: true
    quiesce: true
"""

RETURN = r"""
snapshot:
  description:
    - The snapshot's facts after the task, the same as RV(kvm.snapshots.vm_snapshot_info#module:domains.snapshots)
      gives; in check mode, as predicted.
    - null when it does not exist.
  returned: with O(domain), when O(state) is V(present), V(reverted) or V(current)
  type: dict
  sample:
    name: desktop-live
    description: Xfce desktop installed
    creation_time: "2026-11-27T01:57:56+00:00"
    creation_epoch: 1795744676
    state: running
    location: internal
    parent: pkg-updated
    children: []
    children_count: 0
    descendants_count: 0
    is_current: true
    has_metadata: true
    disks: [{name: vda, snapshot: internal}]
deleted:
  description:
    - Names of the snapshots deleted (in check mode, that would be), oldest first for O(state=pruned) and
      O(all=true).
  returned: with O(domain), when O(state) is V(absent) or V(pruned), or V(present) with O(keep) or O(older_than)
  type: list
  elements: str
  sample: [nightly-2026-11-01, nightly-2026-11-02]
domain:
  description: The domain's name.
  returned: with O(domain)
  type: str
  sample: debian
tree:
  description: The domain's snapshot tree after the task, as C(virsh snapshot-list --tree) draws it.
  returned: with O(domain)
  type: str
  sample: "pkg-updated\n  |\n  +- desktop-live\n    \n"
tree_lines:
  description:
    - RV(tree) as a list of lines, like C(stdout_lines), so C(ansible.builtin.debug) with C(var) shows the tree as
      virsh draws it. Empty when the domain has no snapshot left.
  returned: with O(domain)
  type: list
  elements: str
  sample: ["pkg-updated", "  |", "  +- desktop-live", "    "]
results:
  description:
    - One entry per domain, in the order O(domains) names them (a glob's matches sorted by name, a domain named
      twice once). Returned when some domains fail, too.
    - C(domain) is the domain's name, also for a domain given by UUID.
    - Each holds C(domain), C(changed), C(snapshot), C(deleted), C(tree) and C(tree_lines) as above for one domain,
      or C(domain), C(changed) and C(msg) (the error) for a domain that failed.
  returned: with O(domains)
  type: list
  elements: dict
  sample:
    - {domain: web-1, changed: true, snapshot: {name: pre-patch, is_current: true}, tree: "pre-patch\n    \n",
       tree_lines: ["pre-patch", "    "]}
    - {domain: web-2, changed: false, msg: "cannot create snapshot 'pre-patch' of domain 'web-2': disk vda (/srv/web-2.img) is a raw image, ..."}
interrupted:
  description:
    - When SIGTERM, SIGHUP or SIGINT stopped the module (the task fails), the signal and what was done on the
      way out. The libvirt call under way when the signal came may have completed. With O(domains), the
      domains not yet started are not touched and are named, and RV(results) holds the outcome of those
      that finished.
  returned: when the module was interrupted
  type: dict
  contains:
    signal:
      description: V(SIGTERM), V(SIGHUP) or V(SIGINT).
      type: str
    done:
      description: What was done on the way out, one sentence each.
      type: list
      elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import CONNECTION_ARGSPEC, run_module
from ansible_collections.kvm.snapshots.plugins.module_utils._snapshot import SNAPSHOT_STATES, manage_snapshots


def main():
    argument_spec = dict(
        CONNECTION_ARGSPEC,
        domain=dict(type='str'),
        domains=dict(type='list', elements='str'),
        name=dict(type='str'),
        state=dict(type='str', default='present', choices=list(SNAPSHOT_STATES)),
        description=dict(type='str'),
        parent=dict(type='str'),
        disk_only=dict(type='bool', default=False),
        quiesce=dict(type='bool', default=False),
        halt=dict(type='bool', default=False),
        live=dict(type='bool', default=False),
        atomic=dict(type='bool', default=True),
        all=dict(type='bool', default=False),
        children=dict(type='bool', default=False),
        children_only=dict(type='bool', default=False),
        metadata_only=dict(type='bool', default=False),
        after_revert=dict(type='str', default='snapshot', choices=['snapshot', 'running', 'paused']),
        force=dict(type='bool', default=False),
        reset_nvram=dict(type='bool', default=False),
        keep=dict(type='int'),
        pattern=dict(type='str', default='*'),
        older_than=dict(type='str'),
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        mutually_exclusive=[('domain', 'domains')],
        required_one_of=[('domain', 'domains')],
        supports_check_mode=True,
    )
    defaults = {option: spec.get('default') for option, spec in argument_spec.items()}
    run_module(module, lambda: manage_snapshots(module.params, defaults, module.check_mode, module._diff))


if __name__ == '__main__':
    main()
