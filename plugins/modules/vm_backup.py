#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: vm_backup
short_description: Back up a libvirt/KVM domain with all its snapshots, verify a backup, restore one
version_added: 1.0.0
description:
  - V(present) writes a new backup of one domain into O(dest). It holds the domain definition (with
    security info such as VNC passwords), every disk image with its whole backing chain (qcow2 and raw),
    the NVRAM of a UEFI domain, the TPM state if there is any, every snapshot's definition in
    topological order with which one is current, and a manifest with format version, domain, libvirt and
    QEMU versions, and each file's size, sparse map and SHA-256. A running domain is copied while it runs
    (O(if_running=live), the default), with every internal snapshot.
  - V(verified) reads a backup from O(src) end to end, checking every checksum, every member path and the
    manifest. It changes nothing.
  - V(restored) verifies O(src) completely, then puts the files back (sparse where the source was),
    defines the domain and redefines its snapshots through libvirt, parents first, and sets the current
    one. No daemon restart is needed.
  - A backup is written under a temporary name and renamed into place only when it is complete and its
    checksums are recorded; an interrupted or failed backup leaves no file that looks complete. Free space
    is checked first. Files are created mode 0600 and directories 0700 whatever the umask, since disk
    images and domain XML can hold secrets.
  - Disks can be files (C(<disk type='file'>)), block devices such as LVM logical volumes or partitions
    (C(<disk type='block'>)) and volumes of C(dir), C(fs) and C(netfs) storage pools (C(<disk type='volume'>),
    resolved through libvirt's storage API to their file and backed up like a file disk, internal snapshots
    included; the manifest records the pool, volume, format and capacity). Network disks and volumes of other
    pool types are refused.
  - A block device is read whole; its runs of zeros cost (next to) no space in an archive compressed with
    zstd (the default) or in format V(directory) (holes), but are stored in full with O(compression=none).
    A raw block device cannot hold internal snapshots; the backup holds its current content, says so in a
    warning, and backs up the rest of the domain.
  - The module reads and writes the disk images and the backup itself, so it must run on the hypervisor
    (or where both are mounted at the same paths). For O(state=present) and O(state=restored), O(uri) must
    name the hypervisor of the machine the module runs on (see O(uri)); O(state=verified) reads only the backup
    and takes any O(uri).
author:
  - kvm.snapshots maintainers (@kvm-snapshots)
extends_documentation_fragment:
  - kvm.snapshots.connection
attributes:
  check_mode:
    support: full
    description:
      - V(present) reports the backup it would write (files, estimated size, backups O(keep) would remove)
        without stopping, pausing or copying anything.
      - V(restored) verifies the whole backup and checks every precondition, and reports what it would
        restore, without writing anything.
  diff_mode:
    support: none
    description: There is no before and after to show; the result describes the backup.
options:
  domain:
    description:
      - Name or UUID of the domain.
      - Required with O(state=present).
      - With O(state=verified) or O(state=restored) it is optional; when given, the backup must hold this domain.
    type: str
  state:
    description:
      - V(present) makes a new backup. It always reports C(changed), since every run writes a new backup;
        use O(keep) to bound how many are kept.
      - V(verified) checks a backup and never changes anything.
      - V(restored) restores a backup; it always reports C(changed).
    type: str
    choices: [present, verified, restored]
    default: present
  dest:
    description:
      - Directory to write the backup into, created mode 0700 (with missing parents) if needed.
      - Backups are named C(<domain>-<UUID tag>-<UTC time>.tar.zst) (C(.tar) without compression, no suffix
        for O(format=directory)), for example C(web1-6f1c5c33-20261127T020304.517Z.tar.zst), with the domain name
        made safe for a file name, the first 8 hex digits of the domain's UUID, and the time to the
        millisecond, so two domains whose names look alike in a file name (C(web 1), C(web_1)) never share
        a name and one domain's backups sort by time. A name is never reused; a backup started in the same
        millisecond as another of the domain takes the next free one. RV(backup.path) says which it got.
      - Only one backup of a domain runs at a time on a host; a second one waits until the first has
        finished (RV(backup.waited)), then looks at the domain afresh.
      - Must be writable (or, when missing, its nearest existing parent), checked in check mode too, and
        before a running domain is paused or shut down.
      - O(state=present) needs O(dest) or O(repository), not both.
    type: path
  repository:
    description:
      - A restic repository to write the backup into (O(state=present)) or read it from (O(state=verified),
        O(state=restored)), instead of a O(dest) directory or a O(src) path. A local path, C(sftp:user@host:/path),
        C(rest:https://host:8000/), C(s3:https://host/bucket) or any other location restic 0.14 or newer takes.
      - Each backup is one restic snapshot holding one file, C(<domain>.tar), the same backup as O(format=archive)
        writes (manifest, definition, snapshot metadata, disks with every internal snapshot, NVRAM, TPM) as a
        plain tar stream, fed to C(restic backup --stdin) as it is read from the disks; nothing is staged on the
        host and holes are not read as data. restic cuts it into content-defined chunks, so what an earlier
        backup, or another domain cloned from the same image, already stored is not stored again; it encrypts
        (AES-256) and compresses (zstd) every chunk.
      - The snapshot is tagged C(kvm.snapshots), C(domain:<name>), C(uuid:<UUID>) and C(backup:<backup name>);
        RV(backup.id) names it. restic stores a snapshot only once the whole stream has arrived; the restic
        process dies with the module (also on SIGKILL), so an interrupted backup leaves no snapshot, only
        unreferenced data that C(restic prune) (run by O(keep) and friends) removes.
      - Needs the C(restic) program on the hypervisor (Debian, Ubuntu C(apt install restic)). Domain names with a
        comma cannot be restic tags and are refused.
    type: str
  repository_password:
    description:
      - The repository's password, handed to restic in its environment (C(RESTIC_PASSWORD)), never on a command
        line, in a result or a message. Exactly one of O(repository_password) and O(repository_password_file)
        is needed with O(repository).
    type: str
  repository_password_file:
    description:
      - A file on the hypervisor holding the repository's password (C(RESTIC_PASSWORD_FILE)); keep it mode 0600.
    type: path
  repository_env:
    description:
      - Environment for restic, such as C(AWS_ACCESS_KEY_ID) and C(AWS_SECRET_ACCESS_KEY) for an S3 repository,
        or C(RESTIC_CACHE_DIR). Never logged; values never appear in a message.
    type: dict
  repository_init:
    description:
      - Create the repository (C(restic init)) when there is none at O(repository) yet. Off by default, so that
        a mistyped location is refused instead of starting a new, empty repository.
    type: bool
    default: false
  format:
    description:
      - V(archive) writes one tar file compressed with zstd, which plain C(tar -I zstd -xf) opens.
      - V(directory) writes plain files (reflink copies where the file system supports them, sparse copies
        otherwise).
      - A reflink copy takes no time and no space, but the module still reads every disk once to record its
        checksums, so the backup takes about as long as reading the data (about half a second per GiB here).
    type: str
    choices: [archive, directory]
    default: archive
  compression:
    description:
      - V(zstd) compresses the archive with the C(zstd) program; V(none) writes a plain C(.tar).
      - Only with O(format=archive).
    type: str
    choices: [zstd, none]
    default: zstd
  compression_level:
    description:
      - zstd level, 1 (fastest) to 22 (smallest). When not set, 3.
      - Only with O(format=archive) and O(compression=zstd).
    type: int
  threads:
    description:
      - zstd worker threads; V(0) uses all cores.
    type: int
    default: 0
  if_running:
    description:
      - What to do when the domain is not shut off at O(state=present).
      - V(live) (the default) copies it while it runs. For an instant (tens of milliseconds) libvirt puts
        a qcow2 overlay on top of each writable disk, atomically across disks; the guest's writes go
        there while the disks, with every internal snapshot in them, are copied as read-only backing
        files; then the overlays are merged back (an active block commit and a pivot) and deleted. The
        backup is crash-consistent, as if the power had been cut at the instant of the overlay; use
        O(quiesce) for application-consistent backups. The definition recorded is the one from before
        the overlay, and the domain's live and persistent definitions are as before afterwards.
      - The overlays are named C(.<disk file name>.kvmsnap-overlay) beside their disks. Should a backup
        die while they exist (SIGKILL, a host reboot), the next O(state=present) run on the domain merges
        them first, with a warning; M(kvm.snapshots.vm_snapshot) refuses the domain until then, and
        M(kvm.snapshots.vm_snapshot_info) reports them in RV(kvm.snapshots.vm_snapshot_info#module:domains.backup_overlays).
        Should a merge fail, the overlay stays in use (no guest write is lost) and the message says how
        to merge it by hand. A libvirt daemon restarted during the copy is waited for (up to two minutes).
      - Overlays go on file disks only. A running domain with a writable block device or storage pool volume
        disk is refused with O(if_running=live) (nothing is changed); use V(suspend) for it.
      - V(fail) refuses with a message.
      - V(shutdown) shuts it down gracefully (ACPI), waits up to O(shutdown_timeout) seconds, makes the
        backup and starts it again. Refused for a transient domain, which a shutdown would remove.
      - V(suspend) pauses it for the copy and resumes it afterwards, about as long as an offline backup of
        the same data takes (in the collection's bench, 3.3 s per GiB of data at zstd level 3 on 2 cores).
        The disks are copied crash-consistent; the memory is not saved. A domain that is already paused is
        copied as it is and stays paused, whatever O(if_running) says.
      - Once the module paused or shut down the domain or put the overlays on it, it resumes or starts it
        again or merges them back however the backup ends, also when the module is stopped by SIGTERM or
        SIGHUP (C(systemctl stop), a host shutdown, AWX cancelling the job) or SIGINT; an unfinished backup
        is removed and RV(interrupted) says what was done. Should the resume or start fail, or the guest
        not finish shutting down, the failure message says so and how to start it by hand. SIGKILL cannot
        be handled; the domain then stays paused or shut off, or keeps its overlays until the next backup.
    type: str
    choices: [live, fail, shutdown, suspend]
    default: live
  quiesce:
    description:
      - With O(if_running=live) and a running domain, freeze the guest's file systems through the QEMU
        guest agent for the instant of the overlay (C(fsfreeze)), so the backup is application-consistent.
      - Needs a guest agent channel in the domain and C(qemu-guest-agent) running in the guest; without
        one that answers, the backup is refused with one line and nothing is changed.
    type: bool
    default: false
  shutdown_timeout:
    description: Seconds to wait for the guest to shut down with O(if_running=shutdown).
    type: int
    default: 300
  keep:
    description:
      - After a successful backup, keep only this many newest backups of this domain in O(dest) (the new one
        included) and remove the older ones. Other domains' backups and other files are never touched.
      - A backup belongs to the domain whose UUID its manifest records, read from the head of each backup;
        its name is not trusted. Backups named by older versions (C(<domain>-<UTC time>), without the UUID
        tag) count too when their manifest records this domain's UUID, whatever their name. A backup whose
        manifest cannot be read belongs to no domain and is never removed.
      - V(N) keeps the newest V(N) (1 or more, the new one included). V(0) is refused. Not set, every backup
        is kept.
      - With O(repository), restic's C(forget --keep-last) over this domain's backups (by the C(uuid:) tag), then
        C(prune). It combines with O(keep_daily), O(keep_weekly) and O(keep_monthly); a backup any of them keeps
        is kept. In check mode, RV(removed) lists what would go, counting the new backup as one that O(keep)
        keeps; O(keep_daily), O(keep_weekly) and O(keep_monthly) are judged on the backups there now.
    type: int
  keep_daily:
    description:
      - With O(repository), also keep the newest backup of each of the last this many days that have one
        (restic C(forget --keep-daily)). Must be 1 or more.
    type: int
  keep_weekly:
    description: With O(repository), also keep the newest backup of each of the last this many weeks (C(--keep-weekly)).
    type: int
  keep_monthly:
    description: With O(repository), also keep the newest backup of each of the last this many months (C(--keep-monthly)).
    type: int
  src:
    description:
      - The backup to verify or restore, as O(state=present) returned it in RV(backup.path)
        (a C(.tar.zst), a C(.tar) or a directory).
      - With O(repository), a restic snapshot ID (or a unique prefix) as RV(backup.id) returned it, or V(latest)
        for the newest backup of O(domain). A snapshot of another domain than O(domain) is refused. Restoring
        on another host than the one that made the backup works the same, with O(disk_dir) as for a file.
      - Required with O(state=verified) and O(state=restored).
    type: path
  disk_dir:
    description:
      - With O(state=restored), put every disk image (and its backing files) into this existing directory
        instead of its original path, rewriting the paths in the domain definition, in every snapshot's
        definition and, for moved backing files, in the qcow2 headers.
      - QEMU must be able to enter it and every directory above it (mode C(0711) or C(0755) for a directory
        owned by root); one it cannot is refused before anything is written (see the notes).
      - NVRAM and TPM state always go back to libvirt's own places.
      - A block device or storage-pool volume becomes a file here (a sparse raw file for a block device),
        and its disk a C(type='file') disk. Without O(disk_dir) a volume goes back into its pool (created
        through the storage API when it is missing) and the definition keeps pointing at the volume.
    type: path
  force:
    description:
      - With O(state=restored), replace an existing domain of the same name, which must be shut off
        (a running domain is always refused), and existing files at the restored paths.
      - Without it, an existing domain or an existing file at a restored path is refused.
      - A block device in the backup is written back onto the device (which must exist, be at least as
        large and not be in use) only with O(force=true), and only once the whole backup has been verified;
        without it, restore with O(disk_dir).
      - The old definition and files are only removed once the restored ones are in place; a failed
        restore puts them back.
    type: bool
    default: false
  start:
    description: With O(state=restored), start the domain after restoring it.
    type: bool
    default: false
  progress_interval:
    description:
      - Print a progress line every this many seconds while the task runs (phase, percent, bytes done of the total,
        rate, ETA, the disk and the file being written), in the C(ansible-playbook) output and so in AWX's job log.
        A task that ends sooner prints none.
      - V(0) turns progress off, and the module runs as a plain synchronous module.
      - Done by the collection's action plugin of the same name, which runs the module asynchronously and polls it
        (see the notes). A task with its own C(async) runs as it says, without progress lines.
    type: int
    default: 30
  progress_file:
    description:
      - The module rewrites this JSON file (atomically, about once a second) with its progress while it runs,
        and removes it when it ends. Keys C(phase), C(done) and C(total) (bytes; C(total) is null for a phase
        without bytes, such as a shutdown), C(disk), C(file) (the file being written), C(domain), C(state),
        C(phase_seconds), C(seconds) and C(pid) (the module's process).
      - Left unset, the action plugin picks a fresh name in the remote async directory (C(~/.ansible_async) of the
        user the module runs as) when O(progress_interval) is above 0; set it to watch the progress yourself, for
        example of a task with C(async) and C(poll=0).
      - Must be an absolute path.
    type: path
notes:
  - B(Progress.) Unless O(progress_interval=0) or the task sets C(async), the action plugin starts the module
    through Ansible's C(async_wrapper), as an C(async) task, polls it with C(ansible.builtin.async_status) (every
    0.1 s at first, then less often, at most every 5 seconds), and prints a progress line every
    O(progress_interval) seconds from O(progress_file). The task's result is the module's own. Check mode,
    C(become), C(delegate_to), C(module_defaults) and remote hosts over SSH work as for any module. The module
    runs detached from the connection, as any C(async) task; when the play stops waiting for it (Ctrl-C, AWX
    cancelling the job, a task C(timeout)), the action plugin sends it SIGTERM first, on the managed node, and
    it rolls back as on any SIGTERM (see RV(interrupted)). C(kill -TERM) the C(pid) that O(progress_file) names
    stops it by hand.
  - B(What the percent counts.) The bytes of data read from the disks (or from the backup, when verifying or
    restoring) of the total to read. With zstd the compressor holds some of what was read (up to a few hundred
    MiB at high levels) before it is written; the phase C(finishing the backup) that follows the copy is that
    last part being compressed and synced to disk.
  - B(The file being written.) A backup is written under a hidden name beside its final one,
    C(.<name>.tar.zst.partial-<hex>) (a directory C(.<name>.partial-<hex>) for O(format=directory)), and renamed
    into place when complete; a restore writes each file as C(.<file>.kvmsnap-restore-<hex>) beside its
    destination. C(ls -la) shows them grow; the progress line names the one being written.
  - Inside a backup, C(manifest.json) comes first and describes every file (role, original path, size,
    sparse map, owner and mode, the XML files' digests); C(checksums.json) comes last with every file's digest.
    So a restore knows where each file goes before its data arrives, and reads the archive once.
  - A file's digest, C(piecewise_sha256) in C(manifest.json) and C(checksums.json) and C(sha256) in the
    results, is not what C(sha256sum) prints for the file. It is the SHA-256 of the list of SHA-256 digests of its
    consecutive 64 KiB pieces (the last one may be shorter). It depends on the content only, not on which parts are
    holes, so a sparse copy and a dense copy of a disk have the same digest, and a piece that is a hole costs nothing
    to hash. To recompute it, read the file 65536 bytes at a time and feed the SHA-256 digest (32 bytes) of
    each piece to one outer SHA-256. Manifests written before name it C(sha256); they still verify and restore.
  - Beside every backup, RV(backup.checksum_file) (C(<backup>.sha256)) holds what C(sha256sum) prints for the
    backup itself, the archive file or every file of the directory, so C(cd <dest> && sha256sum -c <backup>.sha256)
    checks it without knowing the format. It is computed from the bytes as they are written (a hole of a
    V(directory) backup costs the hashing of its zeros). Removing a backup for O(keep) removes it too.
  - O(state=verified) checks everything the backup holds, byte for byte (every file's digest, the manifest,
    the tar structure, zstd's own checksum). zstd's framing has a little redundancy, so a damaged byte there that
    changes nothing that the archive holds is harmless and not reported.
  - Network disks (Ceph RBD, iSCSI, NBD, ...), block devices and storage pool volumes are not supported;
    the module refuses such a domain and names the disk.
  - Restore checks every member path (no absolute paths, no C(..), no links or devices) and every checksum
    before any live file, disk or definition is touched; files are written under temporary names beside
    their destination and renamed into place at the end.
  - A restore checks that QEMU can reach what it restores before writing anything. QEMU runs as the user and
    group that C(/etc/libvirt/qemu.conf) sets (C(user), C(group); when unset, the defaults its commented lines
    name, C(libvirt-qemu) on Debian and Ubuntu, C(qemu) on Fedora and RHEL), with that user's supplementary
    groups. libvirt's C(dynamic_ownership) (on by default) gives it the image files when the domain starts, but
    not the directories above them; so every directory from C(/) down to O(disk_dir) (or to each disk's
    original directory, and to the NVRAM's) must let that user search it (C(x)). A directory that does not is
    refused, naming it, its mode and owner and the mode to use (the same with the search bits for group and
    others, such as C(0711), or C(0755)). Directories the restore creates itself (the NVRAM's) are created
    C(0711). Root as QEMU's user passes only where C(clear_emulator_capabilities = 0); ACLs are not read.
    With C(qemu:///session), QEMU runs as the module's user.
  - SELinux labels of restored files are not set; run C(restorecon) on them where SELinux is enforcing
    (the P(kvm.snapshots.restore#role) role does).
seealso:
  - module: kvm.snapshots.vm_snapshot
  - module: kvm.snapshots.vm_snapshot_info
"""

EXAMPLES = r"""
- name: Back up a running domain to an S3 repository (restic), keeping 7 daily and 4 weekly backups
  kvm.snapshots.vm_backup:
    domain: web1
    repository: s3:https://s3.example.com/kvm-backups
    repository_password_file: /etc/kvm-backup/restic.pass
    repository_env:
      AWS_ACCESS_KEY_ID: "{{ vault_s3_key }}"
      AWS_SECRET_ACCESS_KEY: "{{ vault_s3_secret }}"
    keep_daily: 7
    keep_weekly: 4
  register: bk

- name: Restore the newest backup of web1 from that repository (on any hypervisor)
  kvm.snapshots.vm_backup:
    state: restored
    domain: web1
    src: latest
    repository: s3:https://s3.example.com/kvm-backups
    repository_password_file: /etc/kvm-backup/restic.pass
    repository_env:
      AWS_ACCESS_KEY_ID: "{{ vault_s3_key }}"
      AWS_SECRET_ACCESS_KEY: "{{ vault_s3_secret }}"
    disk_dir: /var/lib/libvirt/images

- name: Back up a shut-off domain with all its snapshots, keep the 7 newest backups
  kvm.snapshots.vm_backup:
    domain: web1
    dest: /srv/backups/kvm
    keep: 7
  register: bk

- name: Back up a running domain while it runs, its file systems frozen for an instant by the guest agent
  kvm.snapshots.vm_backup:
    domain: db1
    dest: /srv/backups/kvm
    quiesce: true

- name: Back up a running domain, pausing it for the copy, at a higher compression level
  kvm.snapshots.vm_backup:
    domain: db1
    dest: /srv/backups/kvm
    if_running: suspend
    compression_level: 10

- name: Plain files instead of an archive (reflink copies on XFS or Btrfs)
  kvm.snapshots.vm_backup:
    domain: web1
    dest: /srv/backups/kvm
    format: directory

- name: Check a backup end to end
  kvm.snapshots.vm_backup:
    state: verified
    src: "{{ bk.backup.path }}"

- name: Restore it over the existing (shut off) domain and start it
  kvm.snapshots.vm_backup:
    state: restored
    src: "{{ bk.backup.path }}"
    force: true
    start: true

- name: Restore the disks into another directory
  kvm.snapshots.vm_backup:
    state: restored
    src: /srv/backups/kvm/web1-6f1c5c33-20261127T020304.517Z.tar.zst
    disk_dir: /var/lib/libvirt/images/restored
"""

RETURN = r"""
backup:
  description: The backup written (O(state=present)); in check mode, the backup that would be written (without checksums).
  returned: when O(state=present)
  type: dict
  contains:
    path:
      description: Path of the backup (file or directory); null with O(repository).
      type: str
      sample: /srv/backups/kvm/web1-6f1c5c33-20261127T020304.517Z.tar.zst
    id:
      description: With O(repository), the restic snapshot ID of the backup (null in check mode).
      type: str
      returned: with O(repository)
      sample: 79ef7c8c
    repository:
      description: With O(repository), the repository, with any password in a URL masked.
      type: str
      returned: with O(repository)
    added:
      description: With O(repository), the bytes this backup added to the repository (restic's C(data_added)).
      type: int
      returned: with O(repository), not in check mode
      sample: 5243369
    name:
      description: Name of the backup, also its top directory inside the archive.
      type: str
      sample: web1-6f1c5c33-20261127T020304.517Z
    format:
      description: V(archive), V(directory), or V(repository) with O(repository).
      type: str
    compression:
      description: V(zstd), V(none), or null for a directory.
      type: str
    compression_level:
      description: The zstd level used, null without zstd.
      type: int
    domain:
      description: Name of the domain.
      type: str
    uuid:
      description: UUID of the domain.
      type: str
    created:
      description: When the backup was started, ISO 8601 in UTC.
      type: str
      sample: "2026-11-27T02:03:04Z"
    action:
      description: What was done about a running domain, V(live), V(shutdown), V(suspend), V(paused) (already paused),
        or null.
      type: str
    mode:
      description:
        - How consistent the copy is. V(offline), the domain was shut off (or shut down for the copy);
          V(suspended), paused for the copy (crash-consistent); V(live), copied while it ran
          (crash-consistent); V(quiesced), copied while it ran, its file systems frozen by the guest
          agent for the instant of the overlay (application-consistent).
      type: str
      sample: live
    held_seconds:
      description:
        - Seconds the guest could not run or write to its disks because of the backup. For V(live), the
          instants of the overlay and of the pivots; for V(suspend) and V(shutdown), the whole copy.
      type: float
      sample: 0.042
    overlay_seconds:
      description: Seconds the live overlays existed (the guest ran throughout); null without them.
      type: float
      sample: 12.5
    size:
      description: Bytes the backup takes on disk (the archive file, or the blocks allocated to the directory's files).
      type: int
    data_size:
      description: Bytes of data read from the domain's files (holes are not read).
      type: int
    files:
      description: Every file in the backup, in order.
      type: list
      elements: dict
      contains:
        name:
          description: Path inside the backup.
          type: str
          sample: disks/00-web1.qcow2
        role:
          description: V(domain), V(snapshot), V(disk), V(backing), V(snapshot-disk), V(memory), V(nvram) or V(tpm).
          type: str
        path:
          description: The original path of a disk, NVRAM or TPM file; null for the XML files.
          type: str
        size:
          description: Size in bytes (apparent size for sparse files).
          type: int
        sparse:
          description: Whether the file has holes, kept as holes in the backup.
          type: bool
        sha256:
          description: The file's piecewise SHA-256 (C(piecewise_sha256) in the manifest), not what C(sha256sum)
            prints (see the notes).
          type: str
    checksum_file:
      description:
        - The file beside the backup that C(sha256sum -c) reads, C(<backup>.sha256), with the SHA-256 of the archive,
          or of every file of a V(directory) backup (paths relative to O(dest)).
      type: str
      sample: /srv/backups/kvm/web1-6f1c5c33-20261127T020304.517Z.tar.zst.sha256
    snapshots:
      description: Names of the snapshots in the backup, parents before children.
      type: list
      elements: str
    current_snapshot:
      description: The current snapshot, or null.
      type: str
    manifest_sha256:
      description: The piecewise SHA-256 of the backup's C(manifest.json) (see the notes).
      type: str
    disks:
      description: The domain's disks as they were backed up.
      type: list
      elements: dict
      returned: success, not in check mode
      contains:
        target:
          description: The disk's target device.
          type: str
          sample: vda
        type:
          description: V(file), V(block) or V(volume).
          type: str
        path:
          description: The file or device read (a volume's file).
          type: str
        format:
          description: The image format, as qemu-img reads it.
          type: str
          sample: qcow2
        internal_snapshots:
          description: Whether the image can hold internal snapshots (qcow2); a raw disk cannot.
          type: bool
        pool:
          description: The storage pool of a volume.
          type: str
          returned: for a volume
        volume:
          description: The volume's name in its pool.
          type: str
          returned: for a volume
    duration:
      description: Seconds the backup took, including stopping or pausing the domain.
      type: float
    waited:
      description: Seconds spent waiting for another backup of the same domain to finish first.
      type: float
      returned: when the backup had to wait
    throughput:
      description: Bytes of data per second (RV(backup.data_size) / RV(backup.duration)).
      type: int
    estimated_size:
      description: In check mode, the space checked for (allocated size of the domain's files).
      type: int
      returned: in check mode
interrupted:
  description:
    - When SIGTERM, SIGHUP or SIGINT stopped the module (the task fails), the signal and what was done on the
      way out, in order, for example that the partial backup was removed and the domain resumed. The same
      sentences end the failure message.
  returned: when the module was interrupted
  type: dict
  contains:
    signal:
      description: V(SIGTERM), V(SIGHUP) or V(SIGINT).
      type: str
    done:
      description: What was undone or restored, one sentence each.
      type: list
      elements: str
removed:
  description:
    - Older backups removed because of O(keep) (in check mode, the ones that would be).
    - With O(repository), their restic snapshot IDs.
  returned: when O(state=present)
  type: list
  elements: str
verified:
  description: What O(state=verified) checked.
  returned: when O(state=verified)
  type: dict
  contains:
    path:
      description: The backup checked; null with O(repository).
      type: str
    id:
      description: With O(repository), the restic snapshot ID checked.
      type: str
      returned: with O(repository)
    format:
      description: V(archive), V(directory), or V(repository) with O(repository).
      type: str
    compressed:
      description: Whether the archive is zstd-compressed.
      type: bool
    format_version:
      description: The backup's format version.
      type: int
    name:
      description: The backup's name.
      type: str
    created:
      description: When the backup was made, ISO 8601 in UTC.
      type: str
    domain:
      description: Name of the domain in the backup.
      type: str
    uuid:
      description: UUID of the domain in the backup.
      type: str
    libvirt_version:
      description: libvirt version of the host that made the backup.
      type: str
    qemu_version:
      description: QEMU version of the host that made the backup.
      type: str
    files:
      description: Every file checked, as in RV(backup.files).
      type: list
      elements: dict
    snapshots:
      description: Snapshot names, parents before children.
      type: list
      elements: str
    current_snapshot:
      description: The current snapshot, or null.
      type: str
    data_size:
      description: Bytes of data hashed.
      type: int
    manifest_sha256:
      description: The piecewise SHA-256 of the manifest (see the notes).
      type: str
    duration:
      description: Seconds the check took.
      type: float
    throughput:
      description: Bytes of data checked per second.
      type: int
restored:
  description: What O(state=restored) restored (in check mode, would restore).
  returned: when O(state=restored)
  type: dict
  contains:
    src:
      description: The backup restored, as O(src) gave it.
      type: str
    id:
      description: With O(repository), the restic snapshot ID restored (what V(latest) resolved to); else null.
      type: str
    domain:
      description: Name of the restored domain.
      type: str
    uuid:
      description: Its UUID.
      type: str
    backup_created:
      description: When the backup was made.
      type: str
    files:
      description: Each restored file (disk image, NVRAM, TPM state file), in the order of the backup.
      type: list
      elements: dict
      contains:
        name:
          description: The file in the backup (its member, a path relative to the top of the backup).
          type: str
          sample: disks/00-web1.qcow2
        role:
          description: V(disk), V(backing), V(snapshot-disk), V(memory), V(nvram) or V(tpm).
          type: str
        path:
          description: Where it is restored to (with O(disk_dir), the new place of a disk).
          type: str
          sample: /var/lib/libvirt/images/web1.qcow2
        source:
          description: What the domain named when it was backed up, V(file), V(block) (a block device) or V(volume)
            (a storage-pool volume).
          type: str
        size:
          description: Its size in bytes.
          type: int
        sha256:
          description: The piecewise SHA-256 of its content, as its checksum in the backup records (see the notes).
          type: str
        mode:
          description:
            - The permissions the restored file gets, in octal (those it had when backed up; V(0600) when the
              backup does not record them).
          type: str
          sample: '0600'
        uid:
          description:
            - The owner (uid) the restored file gets when the restore runs as root (the one it had when backed
              up), or null when the backup does not record it.
          type: int
          sample: 0
        gid:
          description:
            - The group (gid) the restored file gets when the restore runs as root, or null when the backup does
              not record it.
          type: int
          sample: 0
    directories:
      description:
        - The directories of the domain's TPM state (C(/var/lib/libvirt/swtpm/<uuid>) and below), parents first, each
          with the mode and owner it had when backed up. The restore creates a missing one that a restored file goes
          into with that mode and owner. Empty for a domain without TPM state.
      type: list
      elements: dict
      contains:
        path:
          description: The directory.
          type: str
          sample: /var/lib/libvirt/swtpm/8f4e2c1a-5b6d-4e7f-9a0b-1c2d3e4f5a6b/tpm2
        mode:
          description: Its permissions, in octal (V(0711) when the backup does not record them).
          type: str
          sample: '0711'
        uid:
          description: Its owner (uid) when the restore runs as root, or null when the backup does not record it.
          type: int
        gid:
          description: Its group (gid) when the restore runs as root, or null when the backup does not record it.
          type: int
    definition_file:
      description:
        - The file in the backup that holds the domain definition, as backed up (a path relative to the top of the
          backup). With O(disk_dir) the domain is defined from a copy with the disk paths rewritten.
      type: str
      sample: domain.xml
    snapshot_files:
      description:
        - The file in the backup that holds each snapshot's definition, parents first (the order of
          RV(restored.snapshots)). With O(disk_dir) each is redefined from a copy with the disk paths rewritten.
      type: list
      elements: dict
      contains:
        name:
          description: The file in the backup (a path relative to its top).
          type: str
          sample: snapshots/0001.xml
        snapshot:
          description: The snapshot's name.
          type: str
        current:
          description: Whether this is the snapshot set current (RV(restored.current_snapshot)).
          type: bool
    autostart:
      description:
        - Whether the domain was marked to start with the host (C(virsh autostart)) when backed up; the restored
          domain is marked the same way.
      type: bool
    snapshots:
      description: Snapshots redefined, parents first.
      type: list
      elements: str
    current_snapshot:
      description: The snapshot set current, or null.
      type: str
    replaced:
      description: Whether an existing domain was replaced (O(force)).
      type: bool
    disk_dir:
      description: O(disk_dir), when the disks were moved.
      type: str
    started:
      description: Whether the domain was started (O(start)).
      type: bool
    set_aside:
      description:
        - Files that an earlier, interrupted restore of this domain (for example a SIGKILL) set aside beside
          the restored ones and never put back, that is the disk images it replaced
          (C(.<file>.kvmsnap-replaced-*)), the domain definition it undefined (C(.<domain>.xml.kvmsnap-replaced-*))
          and its snapshots (C(.<domain>.snapshot-NNN-<name>.xml.kvmsnap-replaced-*), parents first, the current
          one ending in C(-current)). Other domains' leftovers in the same directories are not listed. They are
          left for you (a warning names them).
      type: list
      elements: str
      returned: when there are any
    data_size:
      description: Bytes of data read and written.
      type: int
    duration:
      description: Seconds the restore took, verification included.
      type: float
    throughput:
      description: Bytes of data per second.
      type: int
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import CONNECTION_ARGSPEC, run_module
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.states import run


def main():
    module = AnsibleModule(
        argument_spec=dict(
            CONNECTION_ARGSPEC,
            domain=dict(type='str'),
            state=dict(type='str', default='present', choices=['present', 'verified', 'restored']),
            dest=dict(type='path'),
            format=dict(type='str', default='archive', choices=['archive', 'directory']),
            compression=dict(type='str', default='zstd', choices=['zstd', 'none']),
            compression_level=dict(type='int'),
            threads=dict(type='int', default=0),
            if_running=dict(type='str', default='live', choices=['live', 'fail', 'shutdown', 'suspend']),
            quiesce=dict(type='bool', default=False),
            shutdown_timeout=dict(type='int', default=300),
            keep=dict(type='int'),
            keep_daily=dict(type='int'),
            keep_weekly=dict(type='int'),
            keep_monthly=dict(type='int'),
            repository=dict(type='str'),
            repository_password=dict(type='str', no_log=True),
            repository_password_file=dict(type='path', no_log=False),
            repository_env=dict(type='dict', no_log=True),
            repository_init=dict(type='bool', default=False),
            src=dict(type='path'),
            disk_dir=dict(type='path'),
            force=dict(type='bool', default=False),
            start=dict(type='bool', default=False),
            progress_interval=dict(type='int', default=30),
            progress_file=dict(type='path'),
        ),
        required_if=[
            ('state', 'present', ('domain',)),
            ('state', 'verified', ('src',)),
            ('state', 'restored', ('src',)),
        ],
        supports_check_mode=True,
    )
    run_module(module, lambda: run(module.params, module.check_mode))


if __name__ == '__main__':
    main()
