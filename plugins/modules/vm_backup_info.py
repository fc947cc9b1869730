#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_backup_info
short_description: List the backups made by vm_backup, newest first
version_added: 1.0.0
description:
  - Lists the backups that M(kvm.snapshots.vm_backup) made in a directory (O(dest)) or a restic repository
    (O(repository)), of every domain or of one (O(domain)), newest first, with their time, domain, size, bytes
    added, number of internal snapshots and format.
  - In a repository, everything listed comes from restic's snapshot list (C(restic snapshots)) and the tags
    M(kvm.snapshots.vm_backup) put on each backup; no backup data is read.
  - It reads only the head of each backup (its manifest, the first member of an archive), so listing
    large backups is quick. It changes nothing; C(changed) is always false.
  - A backup being written (a hidden C(.<name>.partial-*) entry) and files or directories whose names are
    not backup names are left out silently. An entry with a backup's name but no readable manifest is left
    out with a warning; M(kvm.snapshots.vm_backup) with O(kvm.snapshots.vm_backup#module:state=verified)
    tells what is wrong with it.
  - Which domain a backup holds comes from its manifest (the domain's name and UUID when it was backed up),
    so no libvirt connection is opened and backups of domains that no longer exist are listed too.
author:
  - kvm.snapshots maintainers (@kvm-snapshots)
attributes:
  check_mode:
    support: full
    description: It changes nothing in any mode.
  diff_mode:
    support: none
    description: It changes nothing.
  action_group:
    support: full
    membership:
      - kvm.snapshots.kvm
    description:
      - Part of C(group/kvm.snapshots.kvm) in C(module_defaults), so O(uri) set there for every module applies
        here without an error.
options:
  dest:
    description:
      - The directory of backups, the O(kvm.snapshots.vm_backup#module:dest) that M(kvm.snapshots.vm_backup) wrote them into.
        An absolute path on the host the module runs on.
      - A directory that does not exist holds no backups; the result is an empty list and a warning. A path
        that exists and is not a directory (a backup itself, for example) is an error.
      - One of O(dest) and O(repository) is required.
    type: path
  repository:
    description:
      - A restic repository M(kvm.snapshots.vm_backup) wrote backups into, as its
        O(kvm.snapshots.vm_backup#module:repository) (a path, C(sftp:), C(rest:), C(s3:)).
    type: str
  repository_password:
    description: The repository's password; see O(kvm.snapshots.vm_backup#module:repository_password).
    type: str
  repository_password_file:
    description: A file holding the repository's password.
    type: path
  repository_env:
    description: Environment for restic, such as the S3 keys; never logged.
    type: dict
  domain:
    description:
      - List only the backups of this domain, by name or UUID, as its backups' manifests record them
        (the domain need not exist any more).
      - A name matches the domain's name when the backup was made; a UUID matches its UUID, in any case,
        with or without dashes. When not set, the backups of every domain are listed.
    type: str
  uri:
    description:
      - Not used to list a O(dest); accepted so that C(module_defaults) for C(group/kvm.snapshots.kvm) can set
        O(uri) for every module of the collection.
      - When not set, the environment variable E(LIBVIRT_DEFAULT_URI) is used, then C(qemu:///system).
    type: str
    default: qemu:///system
notes:
  - Sizes are bytes on disk, as C(ls -l) shows them for an archive and as C(du) counts them for a backup of
    format V(directory) (whose disk images are sparse files).
  - O(kvm.snapshots.vm_backup#module:state=verified) records nothing in the backup, so RV(backups[].verified) is
    null for the backups in a O(dest).
seealso:
  - module: kvm.snapshots.vm_backup
    description: Makes, verifies and restores the backups listed here.
requirements:
  - libvirt-python and lxml, as for the other modules of the collection (no connection is opened)
"""

EXAMPLES = r"""
- name: List every backup in /srv/backups
  kvm.snapshots.vm_backup_info:
    dest: /srv/backups
  register: listing

- name: Show the newest backup of web1
  kvm.snapshots.vm_backup_info:
    dest: /srv/backups
    domain: web1
  register: web1_backups

- name: List web1's backups in a restic repository on S3
  kvm.snapshots.vm_backup_info:
    repository: s3:https://s3.example.com/kvm-backups
    repository_password: "{{ vault_restic_password }}"
    repository_env:
      AWS_ACCESS_KEY_ID: "{{ vault_s3_key }}"
      AWS_SECRET_ACCESS_KEY: "{{ vault_s3_secret }}"
    domain: web1
  register: web1_in_s3

- name: Restore the newest one in the dest
  kvm.snapshots.vm_backup:
    domain: web1
    state: restored
    src: "{{ web1_backups.backups[0].path }}"
    force: true
  when: web1_backups.count > 0

# ad hoc:  ansible localhost -m kvm.snapshots.vm_backup_info -a 'dest=/srv/backups domain=web1'
"""

RETURN = r"""
backups:
  description: The backups, newest first.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The backup's name (its file or directory name without the suffix).
      type: str
      sample: web1-6b3c1a2f-20261201T220105.123Z
    path:
      description:
        - Where it is, the path to give O(kvm.snapshots.vm_backup#module:src) to verify or restore it.
        - Null for a backup in a repository.
      type: str
      sample: /srv/backups/web1-6b3c1a2f-20261201T220105.123Z.tar.zst
    id:
      description:
        - The restic snapshot ID of a backup in a repository, to give O(kvm.snapshots.vm_backup#module:src)
          with O(kvm.snapshots.vm_backup#module:repository); null for a backup in a O(dest).
      type: str
      sample: 79ef7c8c
    time:
      description: When the backup was made, ISO 8601 in UTC, to the second (from its manifest).
      type: str
      sample: '2026-12-01T22:01:05Z'
    domain:
      description: The name of the domain it holds, when it was backed up.
      type: str
    uuid:
      description: The UUID of the domain it holds.
      type: str
    size:
      description:
        - Bytes on disk of the backup (a V(directory) backup's sparse files count their allocated blocks).
        - In a repository, the bytes of the backup's tar stream (before deduplication and compression).
      type: int
    added:
      description:
        - Bytes this backup added to where it is stored; for a backup in a O(dest), the same as RV(backups[].size).
        - In a repository, what restic stored for it that earlier backups had not (restic's C(data_added)).
      type: int
    snapshots:
      description: Number of internal snapshots it holds.
      type: int
    format:
      description: V(archive), V(directory) or V(repository).
      type: str
    compression:
      description: For an archive, V(zstd) or V(none); null for a V(directory).
      type: str
    verified:
      description:
        - Whether its last verification passed, when that is known; null otherwise. Neither a O(dest) nor a
          repository records verifications (tagging a restic snapshot would change its ID), so it is null today.
      type: bool
count:
  description: Number of backups listed.
  returned: always
  type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import CONNECTION_ARGSPEC, run_module
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.listing import backup_info


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONNECTION_ARGSPEC,
            dest=dict(type='path'),
            repository=dict(type='str'),
            repository_password=dict(type='str', no_log=True),
            repository_password_file=dict(type='path', no_log=False),
            repository_env=dict(type='dict', no_log=True),
            domain=dict(type='str'),
        ),
        required_one_of=[('dest', 'repository')],
        mutually_exclusive=[('dest', 'repository')],
        supports_check_mode=True,
    )
    run_module(module, lambda: backup_info(module.params))


if __name__ == '__main__':
    main()
