# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""make bench: kvm.snapshots against the shell it replaces (issue 6; case 11: issue 15).

A benchmark, never a test: it sets up its own domains (prefix kvmsnap-bench-)
on the real libvirtd (qemu:///system), runs each pair side by side in one run,
interleaved (ABAB..., the order flipped every repetition), several times, and
prints medians and RATIOS against the baseline measured in the same process.
The machines are shared and noisy: only the ratios count.

    tests/bench/run.py [--cases 4,5] [--quick] [--reps N] [--level L]

Run as root (libvirt, loop mount for XFS, drop_caches). Kept between runs in
the cache directory (--cache, default /var/lib/libvirt/images/kvmsnap-bench-cache):
the 4 GiB image (and the quick mode's 1 GiB one) with its domain and snapshot
XML; kept in libvirt: the domain kvmsnap-bench-x1000 (1000 snapshots). Everything
else (domains, disks, backups, the XFS loop image) lives in the work directory
and is removed at the end. --purge-cache removes the cached fixtures too.

Results: the table on stdout and in tests/bench/RESULTS.md, which keeps the latest
full-size result of every case (tests/bench/results.json); quick runs and --reps
runs write tests/bench/output/ instead. See tests/bench/README.md.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import random
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path

import libvirt

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / 'tests' / 'bench'
PY = sys.executable
VENV_BIN = Path(PY).parent
URI = 'qemu:///system'
PREFIX = 'kvmsnap-bench-'
X1000 = PREFIX + 'x1000'
BIG = PREFIX + 'big'
BIGX = PREFIX + 'bigxfs'
SPARSE = PREFIX + 'sparse'
DENSE = PREFIX + 'dense'
LIVE = PREFIX + 'live-'
SCALE = PREFIX + 'scale-'
BLOCK = PREFIX + 'block'
REPO_DOM = PREFIX + 'repo'
MODULES = 'ansible_collections.kvm.snapshots.plugins.modules.'
MIB = 1 << 20
GIB = 1 << 30

CASE_WORK = {
    1: 'live snapshot of N running 64 MiB domains',
    2: 'the same, as users write it today',
    3: 'the same task again, nothing to do',
    4: 'all facts of a domain with 1000 snapshots',
    5: 'backup: qcow2 with data + 3 internal snapshots, archive',
    6: 'the same, module defaults vs the seed',
    7: 'the same, format directory',
    8: 'restore of 5',
    9: 'raw sparse disk: backup + restore',
    10: 'read limit, cold cache',
    11: 'block device backup (a loop device with the data of 5)',
    12: 'live backup of a running domain vs suspend, offline and virtnbdbackup',
    13: 'restic repository: first backup, incremental after 2% changed, restore, vs the archive',
}


def log(msg):
    print('bench: %s' % msg, flush=True)


def human(num):
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if abs(num) < 1024 or unit == 'TiB':
            return ('%.0f %s' if unit == 'B' else '%.2f %s') % (num, unit)
        num /= 1024.0
    return str(num)


def sh(cmd, **kw):
    """Run a setup command (untimed); raise with its output on failure."""
    shell = isinstance(cmd, str)
    proc = subprocess.run(cmd, shell=shell, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
                          **kw)
    if proc.returncode != 0:
        raise RuntimeError('command failed (%d): %s\n%s' % (proc.returncode, cmd, proc.stdout[-4000:]))
    return proc.stdout


def settle(dom, timeout=30):
    """Wait until a domain just started stops burning CPU: its firmware's boot takes a core for
    seconds, which would slow whatever is measured next on a 2-core machine."""
    deadline = time.monotonic() + timeout
    last = dom.info()[4]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = dom.info()[4]
        if now - last < 50_000_000:    # under 10 % of a core over the last half second
            return
        last = now


def sync():
    os.sync()


# ---------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------

class Measure:
    """One timed run: wall seconds, peak RSS (KiB) and whatever the case records."""

    def __init__(self, seconds, self_kib=None, children_kib=None, **extra):
        self.seconds = seconds
        self.self_kib = self_kib
        self.children_kib = children_kib
        self.extra = extra


class Bench:
    def __init__(self, opts):
        self.opts = opts
        self.quick = opts.quick
        self.cache = Path(opts.cache)
        self.work = Path(opts.work)
        self.ac = self.work / 'ac'
        self.conn = None
        self.conn_daemon = None
        self.rows = []           # table rows
        self.rss = []            # (case, variant, self_kib, children_kib)
        self.raw = {}            # case -> {variant: [seconds]}
        self.domain_type = None
        self.errors = []
        self.seq = 0
        # what is measured: the commit and the work tree as the run starts
        self.provenance = provenance()

    # ------------------------------------------------------------ plumbing

    def env(self, **extra):
        env = dict(os.environ)
        for key in list(env):
            if key.startswith('ANSIBLE_'):
                del env[key]
        env.update(
            PATH='%s:%s' % (VENV_BIN, env.get('PATH', '/usr/bin:/bin')),
            LIBVIRT_DEFAULT_URI=URI,
            ANSIBLE_COLLECTIONS_PATH=str(self.ac),
            ANSIBLE_INVENTORY=str(self.work / 'inventory.ini'),
            ANSIBLE_LOCALHOST_WARNING='False',
            ANSIBLE_RETRY_FILES_ENABLED='False',
            ANSIBLE_NOCOLOR='1',
            ANSIBLE_HOME=str(self.work / 'ansible-home'),
            ANSIBLE_LOCAL_TEMP=str(self.work / 'ansible-home' / 'tmp'),
            PYTHONPATH=str(self.ac),
        )
        env.update(extra)
        return env

    def timed(self, cmd, env=None, check=True, rusage=False):
        """Run ``cmd`` (argv list, or a string for bash); wall time and peak RSS via wait4.

        stdout and stderr go to files (no pipe to drain while timing).
        """
        self.seq += 1
        out_path = self.work / 'runs' / ('%05d.out' % self.seq)
        ru_path = self.work / 'runs' / ('%05d.rusage' % self.seq)
        env = dict(env or self.env())
        if rusage:
            env['KVMSNAP_BENCH_RUSAGE'] = str(ru_path)
        argv = ['bash', '-c', cmd] if isinstance(cmd, str) else cmd
        with open(out_path, 'wb') as out:
            started_at = time.time()
            start = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(self.work))
            _pid, status = os.waitpid(proc.pid, 0)
            seconds = time.perf_counter() - start
            proc.returncode = os.waitstatus_to_exitcode(status)
        text = out_path.read_text(errors='replace')
        out_path.unlink()
        if check and proc.returncode != 0:
            raise RuntimeError('command failed (%d): %s\n%s' % (proc.returncode, cmd, text[-4000:]))
        self_kib = children_kib = None
        if rusage and ru_path.exists():
            data = json.loads(ru_path.read_text())
            self_kib, children_kib = data['self_kib'], data['children_kib']
            ru_path.unlink()
        return Measure(seconds, self_kib=self_kib, children_kib=children_kib,
                       output=text, rc=proc.returncode, started_at=started_at)

    def module(self, name, args, check=True):
        """Run one module as a process (``python modrun.py <module> args.json``); parse its JSON."""
        self.seq += 1
        args_path = self.work / 'runs' / ('%05d.args.json' % self.seq)
        args_path.write_text(json.dumps(dict(ANSIBLE_MODULE_ARGS=args)))
        m = self.timed([PY, str(BENCH / 'modrun.py'), MODULES + name, str(args_path)], check=False, rusage=True)
        args_path.unlink()
        try:
            result = json.loads(m.extra['output'][m.extra['output'].index('{'):])
        except ValueError:
            raise RuntimeError('module %s printed no JSON (rc %s): %s' % (name, m.extra['rc'], m.extra['output'][-3000:]))
        if check and (result.get('failed') or m.extra['rc'] != 0):
            raise RuntimeError('module %s failed: %s' % (name, result.get('msg', result)))
        m.extra['result'] = result
        m.extra['output'] = None
        return m

    def playbook(self, playbook, extra_vars=None, phases=False):
        """One timed ``ansible-playbook`` run; its PLAY RECAP counts in ``extra``.

        ``phases``: also split the run's time by Ansible's own log (``log_path``,
        one timestamped line per message) into ``start`` (process start to the
        one task's banner: Python, Ansible's imports, inventory, playbook),
        ``task`` (banner to result: fork, building and transferring the module,
        running it) and ``end`` (result to exit: the recap). The playbook must
        have one task.
        """
        cmd = [str(VENV_BIN / 'ansible-playbook'), str(self.work / 'pb' / playbook)]
        if extra_vars:
            path = self.work / 'pb' / ('vars-%d.json' % (self.seq + 1))
            path.write_text(json.dumps(extra_vars))
            cmd += ['-e', '@%s' % path]
        env = None
        if phases:
            log_path = self.work / 'runs' / ('%05d.ansible.log' % (self.seq + 1))
            env = self.env(ANSIBLE_LOG_PATH=str(log_path))
        m = self.timed(cmd, env=env)
        if phases:
            m.extra['phases'] = ansible_phases(log_path.read_text(errors='replace'), m.extra['started_at'], m.seconds)
            log_path.unlink()
        recap = re.search(r'localhost\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)',
                          m.extra['output'])
        if not recap:
            raise RuntimeError('no play recap in:\n' + m.extra['output'][-3000:])
        m.extra.update(ok=int(recap.group(1)), changed=int(recap.group(2)), failed=int(recap.group(4)))
        return m

    def interleave(self, case, variants, reps, between=None):
        """Run the variants side by side: each repetition runs every variant once, order flipped every time.

        ``variants``: list of (key, run(rep) -> Measure, before(rep) or None, after(rep, m) or None, max_reps).
        Returns {key: [Measure]} (index = repetition; None when the variant skipped it).
        """
        results = {v[0]: [] for v in variants}
        for rep in range(reps):
            order = variants if rep % 2 == 0 else list(reversed(variants))
            line = []
            for key, run, before, after, max_reps in order:
                if max_reps is not None and rep >= max_reps:
                    continue
                if before:
                    before(rep)
                m = run(rep)
                if after:
                    after(rep, m)
                line.append('%s %.3fs' % (key, m.seconds))
                if m.self_kib:
                    self.rss.append((case, key, m.self_kib, m.children_kib))
                results[key].append((rep, m))
            if between:
                between(rep)
            log('case %s rep %d/%d: %s' % (case, rep + 1, reps, ', '.join(line)))
        self.raw[case] = {k: [round(m.seconds, 4) for _r, m in v] for k, v in results.items()}
        return results

    # ------------------------------------------------------------ results

    @staticmethod
    def median(runs):
        return statistics.median(m.seconds for _r, m in runs)

    @staticmethod
    def paired_ratio(ours, base):
        """Median over repetitions of ours/baseline, each pair from the same repetition."""
        by_rep = {r: m.seconds for r, m in base}
        ratios = [m.seconds / by_rep[r] for r, m in ours if r in by_rep and by_rep[r] > 0]
        return statistics.median(ratios) if ratios else None

    def row(self, case, work, ours, base, limit, note='', ours_label=None, base_label=None, higher_ok=False,
            extrapolated=False):
        """One table line; ratio = ours / baseline (median of paired ratios). ``limit``: ratio <= limit.

        ``extrapolated``: the baseline ran on a sample and its time was scaled, it was not measured whole.
        """
        ratio = self.paired_ratio(ours, base)
        if limit is None:
            target, met = 'report', '-'
        else:
            target = '<= %sx' % fmt_num(limit)
            if limit < 1:
                target += ' (%sx faster)' % fmt_num(1 / limit)
            met = 'yes' if ratio is not None and ratio <= limit else 'NO'
        self.rows.append(dict(case=case, work=work, ours=self.median(ours), base=self.median(base), ratio=ratio,
                              target=target, met=met, note=note, ours_label=ours_label, base_label=base_label,
                              n=(len(ours), len(base)), extrapolated=extrapolated, load=load_now()))

    # ------------------------------------------------------------ libvirt helpers

    def lv(self):
        if self.conn is not None:
            try:
                alive = self.conn.isAlive() and self.conn_daemon == self.daemon_starts()
            except libvirt.libvirtError:
                alive = False
            if not alive:  # libvirtd restarted (other sessions' tests do that): reconnect
                log('libvirt connection lost (daemon restarted), reconnecting')
                self.conn = None
        if self.conn is None:
            self.conn_daemon = self.daemon_starts()
            libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised, not printed
            self.conn = libvirt.open(URI)
        return self.conn

    def lookup(self, name):
        """The domain, or None when there is none of that name; any other error (daemon down) raises."""
        for attempt in (1, 2):
            try:
                return self.lv().lookupByName(name)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                if attempt == 1 and exc.get_error_domain() == libvirt.VIR_FROM_RPC:
                    self.conn = None  # a connection to a daemon that restarted since: open a new one
                    continue
                raise
        return None

    def wait_libvirt(self, timeout=180):
        """Wait for libvirtd to answer again (other sessions' tests restart it); True when it does."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.conn = None
            if self.answers():
                return True
            time.sleep(2)
        return False

    def pick_domain_type(self):
        caps = self.lv().getCapabilities()
        usable = False
        if "<domain type='kvm'" in caps and os.path.exists('/dev/kvm'):
            st = os.stat('/dev/kvm')
            import grp
            try:
                kvm_gid = grp.getgrnam('kvm').gr_gid
            except KeyError:
                kvm_gid = None
            usable = (st.st_gid == kvm_gid and st.st_mode & 0o060 == 0o060) or st.st_mode & 0o006 == 0o006
        self.domain_type = 'kvm' if usable else 'qemu'
        return self.domain_type

    def domain_xml(self, name, disk, fmt='qcow2', dom_uuid=None):
        return """<domain type='%s'>
  <name>%s</name>
  <uuid>%s</uuid>
  <description>kvm.snapshots benchmark domain (tests/bench); safe to delete</description>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='%s'/>
      <source file='%s'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <memballoon model='none'/>
  </devices>
</domain>
""" % (self.domain_type, name, dom_uuid or uuid.uuid4(), fmt, disk)

    def remove_domain(self, name):
        dom = self.lookup(name)
        if dom is None:
            return
        if dom.isActive():
            dom.destroy()
        flags = (libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM
                 | getattr(libvirt, 'VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA', 0))
        dom.undefineFlags(flags)

    def bench_domains(self):
        return [d.name() for d in self.lv().listAllDomains() if d.name().startswith(PREFIX)]

    # ------------------------------------------------------------ set up / clean up

    def prepare(self):
        if os.geteuid() != 0:
            log('not root: libvirt qemu:///system, loop mounts and drop_caches need root; expect failures')
        self.cleanup(quiet=True)
        for d in (self.work, self.work / 'runs', self.work / 'pb', self.work / 'out', self.cache,
                  self.work / 'ansible-home' / 'tmp'):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.work, 0o711)
        link = self.ac / 'ansible_collections' / 'kvm' / 'snapshots'
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(REPO)
        (self.work / 'inventory.ini').write_text(
            'localhost ansible_connection=local ansible_python_interpreter=%s\n' % PY)
        self.pick_domain_type()
        self.write_playbooks()

    def cleanup(self, quiet=False):
        """Remove every bench domain but the cached x1000, unmount the XFS image, delete the work dir."""
        for name in self.bench_domains():
            if name == X1000:
                continue
            try:
                self.remove_domain(name)
            except libvirt.libvirtError as exc:
                log('cleanup: %s: %s' % (name, exc))
        self.detach_loops()
        mnt = self.work / 'xfs'
        if os.path.ismount(mnt):
            subprocess.run(['umount', str(mnt)], check=False)
        if self.work.exists():
            shutil.rmtree(self.work, ignore_errors=True)
        if not quiet:
            log('cleanup: bench domains and %s removed (kept: %s, %s)' % (self.work, X1000, self.cache))

    def write_playbooks(self):
        pb = self.work / 'pb'
        (pb / 'bulk.yml').write_text("""---
- name: One task snapshots every bench domain in parallel
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Snapshot
      kvm.snapshots.vm_snapshot:
        domains: ["%s*"]
        name: "{{ snap }}"
""" % LIVE)
        (pb / 'loop.yml').write_text("""---
- name: The way playbooks do it today, a loop over virsh
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Snapshot
      ansible.builtin.command: virsh -c qemu:///system snapshot-create-as {{ item }} {{ snap }}
      loop: "{{ doms }}"
""")
        (pb / 'scale.yml').write_text("""---
- name: One task snapshots every shut-off scale domain
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Snapshot
      kvm.snapshots.vm_snapshot:
        domains: ["%s*"]
        name: "{{ snap }}"
""" % SCALE)
        (pb / 'floor.yml').write_text("""---
- name: What any one-task playbook costs (ansible-playbook start + one module)
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Ping
      ansible.builtin.ping:
""")

    # ------------------------------------------------------------ data

    def vocabulary(self):
        """Words from Python's own sources, most frequent first (text-like: code, comments, docs)."""
        if getattr(self, '_vocabulary', None):
            return self._vocabulary
        counts = {}
        stdlib = Path(os.__file__).parent
        for path in sorted(stdlib.glob('*.py'))[:150]:
            for word in re.findall(r'[A-Za-z_][A-Za-z0-9_]{1,15}|[0-9]{1,6}|[(){}\[\]=:,.#"\'<>+-]',
                                   path.read_text(errors='replace')):
                counts[word] = counts.get(word, 0) + 1
        self._vocabulary = sorted(counts, key=lambda w: (-counts[w], w))[:6000]
        return self._vocabulary

    def text_chunks(self, seed, nbytes, chunk=4 * MIB):
        """Yield text-like bytes (Zipf-distributed words, lines of ~10 words): no long-range repeats."""
        rng = random.Random(seed)
        words = self.vocabulary()
        tokens = words + ['\n', '\n    ', '\n\n']
        weights = [1.0 / (i + 1) for i in range(len(words))]
        total = sum(weights)
        weights += [total / 10, total / 20, total / 60]
        cum, acc = [], 0.0
        for w in weights:
            acc += w
            cum.append(acc)
        done = 0
        while done < nbytes:
            want = min(chunk, nbytes - done)
            text = ' '.join(rng.choices(tokens, cum_weights=cum, k=want // 4)).encode()
            while len(text) < want:
                text += ' '.join(rng.choices(tokens, cum_weights=cum, k=want // 4)).encode()
            yield text[:want]
            done += want

    def write_data(self, path, size, layout, seed):
        """Write a sparse raw file of ``size``: ``layout`` is [(offset, length, 'random'|'text')]."""
        with open(path, 'wb') as f:
            f.truncate(size)
            fd = f.fileno()
            text_seed = seed
            for offset, length, kind in layout:
                if kind == 'random':
                    pos = 0
                    while pos < length:
                        n = min(8 * MIB, length - pos)
                        os.pwrite(fd, os.urandom(n), offset + pos)
                        pos += n
                else:
                    pos = 0
                    text_seed += 1
                    for block in self.text_chunks(text_seed, length):
                        os.pwrite(fd, block, offset + pos)
                        pos += len(block)

    # ------------------------------------------------------------ fixtures

    def ensure_x1000(self):
        disk = Path('/var/lib/libvirt/images') / (X1000 + '.qcow2')
        dom = self.lookup(X1000)
        if dom is not None and dom.snapshotNum(0) == 1000 and disk.exists():
            table = subprocess.run(['qemu-img', 'snapshot', '-U', '-l', str(disk)], stdout=subprocess.PIPE,
                                   stderr=subprocess.DEVNULL, text=True, check=False).stdout
            if len(re.findall(r'\bs\d{4}\b', table)) == 1000:
                log('fixture %s: cached (1000 snapshots)' % X1000)
                return dom
        log('fixture %s: creating (1000 internal snapshots in a chain, ~100 s)' % X1000)
        if dom is not None:
            self.remove_domain(X1000)
        if self.lookup(X1000) is not None:
            raise RuntimeError('%s: could not remove the old fixture' % X1000)
        if disk.exists():
            disk.unlink()
        sh(['qemu-img', 'create', '-q', '-f', 'qcow2', str(disk), '64M'])
        dom = self.lv().defineXML(self.domain_xml(X1000, disk))
        start = time.monotonic()
        for i in range(1000):
            dom.snapshotCreateXML('<domainsnapshot><name>s%04d</name></domainsnapshot>' % i, 0)
        log('fixture %s: made in %.0f s' % (X1000, time.monotonic() - start))
        return dom

    def big_spec(self):
        if self.quick:
            return dict(virt=1 * GIB, data=384 * MIB, stem='disk-1G-384M')
        return dict(virt=4 * GIB, data=1536 * MIB, stem='disk-4G-1536M')

    def ensure_big(self, name=BIG, where=None):
        """The backup case domain: a qcow2 of big_spec() with 3 internal snapshots, shut off.

        The image, the domain XML and the snapshot XMLs are cached; each run copies the
        image into the work dir (or ``where``), defines the domain and redefines the snapshots.
        Returns dict(name, disk, files) - files: what the tar/cp baselines copy.
        """
        spec = self.big_spec()
        stem = spec['stem']
        cached = self.cache / (stem + '.qcow2')
        meta = self.cache / (stem + '.json')
        if not (cached.exists() and meta.exists()):
            self.make_big(spec, cached, meta)
        info = json.loads(meta.read_text())
        disk = (where or self.work) / (name + '.qcow2')
        dom = self.lookup(name)
        if dom is not None:
            xml = dom.XMLDesc(0)
            if str(disk) in xml and dom.snapshotNum(0) == 3 and disk.exists():
                return self.big_files(name, disk)
            self.remove_domain(name)
        if not disk.exists():
            sh(['cp', '--sparse=always', '--reflink=never', str(cached), str(disk)])
        dom_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, 'kvmsnap-bench:' + name))

        def fix(xml):
            return (xml.replace(info['disk'], str(disk)).replace(info['uuid'], dom_uuid)
                    .replace('<name>%s</name>' % info['name'], '<name>%s</name>' % name))
        dom = self.lv().defineXML(fix(info['domain_xml']))
        for i, snap_xml in enumerate(info['snapshots']):
            flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
            if i == len(info['snapshots']) - 1:
                flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
            dom.snapshotCreateXML(fix(snap_xml), flags)
        return self.big_files(name, disk)

    def big_files(self, name, disk):
        files = [str(disk), '/etc/libvirt/qemu/%s.xml' % name]
        snapdir = Path('/var/lib/libvirt/qemu/snapshot') / name
        if snapdir.is_dir():
            files += sorted(str(p) for p in snapdir.glob('*.xml'))
        return dict(name=name, disk=disk, files=files)

    def make_big(self, spec, cached, meta):
        log('fixture %s: creating %s qcow2 with %s of data (half random, half text-like) and 3 snapshots'
            % (cached.name, human(spec['virt']), human(spec['data'])))
        start = time.monotonic()
        raw = self.cache / (spec['stem'] + '.raw.tmp')
        chunk = 32 * MIB
        n = spec['data'] // chunk
        stride = spec['virt'] // n
        layout = [(i * stride, chunk, 'random' if i % 2 == 0 else 'text') for i in range(n)]
        self.write_data(raw, spec['virt'], layout, seed=1)
        tmp_name = PREFIX + 'fixture'
        disk = self.cache / (spec['stem'] + '.qcow2.tmp')
        sh(['qemu-img', 'convert', '-q', '-f', 'raw', '-O', 'qcow2', str(raw), str(disk)])
        raw.unlink()
        self.remove_domain(tmp_name)
        dom = self.lv().defineXML(self.domain_xml(tmp_name, disk))
        try:
            for i in (1, 2, 3):
                dom.snapshotCreateXML('<domainsnapshot><name>s%d</name><description>bench snapshot %d'
                                      '</description></domainsnapshot>' % (i, i), 0)
                if i < 3:
                    # make each snapshot own some data of its own
                    sh(['qemu-io', '-f', 'qcow2', '-c', 'write -P 0x%02x %d 16M' % (0x10 * i, ((i * 5) % n) * stride),
                        str(disk)])
            flags = libvirt.VIR_DOMAIN_SNAPSHOT_XML_SECURE
            snaps = [dom.snapshotLookupByName('s%d' % i).getXMLDesc(flags) for i in (1, 2, 3)]
            info = dict(name=tmp_name, uuid=dom.UUIDString(), disk=str(disk),
                        domain_xml=dom.XMLDesc(libvirt.VIR_DOMAIN_XML_SECURE | libvirt.VIR_DOMAIN_XML_INACTIVE),
                        snapshots=snaps, virt=spec['virt'], data=spec['data'])
        finally:
            self.remove_domain(tmp_name)
        os.rename(disk, cached)
        meta.write_text(json.dumps(info))
        log('fixture %s: made in %.0f s (%s allocated)'
            % (cached.name, time.monotonic() - start, human(os.stat(cached).st_blocks * 512)))

    def drop_caches(self):
        sync()
        try:
            with open('/proc/sys/vm/drop_caches', 'w') as f:
                f.write('3\n')
            return True
        except OSError:
            return False

    def evict(self, paths):
        """Cold cache: drop_caches when permitted, else fadvise(DONTNEED) on each file."""
        if self.drop_caches():
            return 'drop_caches'
        for p in paths:
            with open(p, 'rb') as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        return 'fadvise'

    # ------------------------------------------------------------ cases 1-3

    def live_domains(self, count):
        names = ['%s%02d' % (LIVE, i) for i in range(1, count + 1)]
        log('cases 1-3: defining and starting %d running 64 MiB domains (%s)' % (count, self.domain_type))

        for name in names:  # a retry after a daemon restart finds the first attempt's domains
            self.remove_domain(name)

        def one(name):
            disk = self.work / (name + '.qcow2')
            sh(['qemu-img', 'create', '-q', '-f', 'qcow2', str(disk), '64M'])
            conn = libvirt.open(URI)
            try:
                dom = conn.defineXML(self.domain_xml(name, disk))
                dom.create()
            finally:
                conn.close()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(one, names))
        time.sleep(2)  # let the BIOSes settle
        return names

    def delete_snapshots(self, names, snaps):
        def one(name):
            conn = libvirt.open(URI)
            try:
                dom = conn.lookupByName(name)
                for snap in snaps:
                    try:
                        dom.snapshotLookupByName(snap).delete(0)
                    except libvirt.libvirtError:
                        pass
            finally:
                conn.close()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(one, names))

    def count_snapshot(self, names, snap):
        found = 0
        for name in names:
            try:
                self.lookup(name).snapshotLookupByName(snap)
                found += 1
            except libvirt.libvirtError:
                pass
        return found

    def cases_1_2_3(self, cases):
        n = self.opts.domains or (4 if self.quick else 20)
        reps = self.reps(5)
        names = self.live_domains(n)
        bash_create = ('for d in %s; do virsh -c qemu:///system snapshot-create-as "$d" "$SNAP" >/dev/null || exit 1; done'
                       % ' '.join(names))

        # warm-up, untimed: a domain's first snapshot grows its qcow2 (vmstate clusters); later ones reuse them
        sh(bash_create, env=self.env(SNAP='warm-up'))
        self.delete_snapshots(names, ['warm-up'])

        if 1 in cases or 2 in cases:
            def snap_name(rep, key):
                return 'r%d-%s' % (rep, key)

            def check(rep, key):
                got = self.count_snapshot(names, snap_name(rep, key))
                if got != n:
                    raise RuntimeError('case 1/2: %s made %d of %d snapshots' % (key, got, n))

            variants = [('ours', lambda rep: self.playbook('bulk.yml', dict(snap=snap_name(rep, 'ours'))),
                         None, lambda rep, m: check(rep, 'ours'), None)]
            if 1 in cases:
                variants.append(('bash', lambda rep: self.timed(bash_create, env=self.env(SNAP=snap_name(rep, 'bash'))),
                                 None, lambda rep, m: check(rep, 'bash'), None))
            if 2 in cases:
                variants.append(('loop', lambda rep: self.playbook('loop.yml', dict(snap=snap_name(rep, 'loop'),
                                                                                    doms=names)),
                                 None, lambda rep, m: check(rep, 'loop'), None))
            if 1 in cases:
                # the module alone, as a process: what the task costs without ansible-playbook around it
                variants.append(('module', lambda rep: self.module('vm_snapshot', dict(
                    domains=[LIVE + '*'], name=snap_name(rep, 'module'))),
                    None, lambda rep, m: check(rep, 'module'), None))
            res = self.interleave('1-2', variants, reps,
                                  between=lambda rep: self.delete_snapshots(
                                      names, [snap_name(rep, k) for k in ('ours', 'bash', 'loop', 'module')]))
            if 1 in cases:
                self.row('1', 'live snapshot of %d running 64 MiB domains' % n, res['ours'], res['bash'], 1.0,
                         ours_label='ansible-playbook, one vm_snapshot task (domains glob)',
                         base_label='bash loop of virsh snapshot-create-as')
                self.row('1m', 'the same, the module alone (no ansible-playbook)', res['module'], res['bash'], None,
                         note='vm_snapshot run as a process the way Ansible runs it on the host',
                         ours_label='vm_snapshot as a process', base_label='bash loop of virsh snapshot-create-as')
            if 2 in cases:
                self.row('2', 'the same, vs the loop playbooks use today', res['ours'], res['loop'], 0.2,
                         ours_label='the same task',
                         base_label='ansible-playbook, loop: over command: virsh snapshot-create-as')

        if 3 in cases:
            snap = 'bench-idem'
            self.delete_snapshots(names, [snap])
            sh(bash_create, env=self.env(SNAP=snap))

            def ours(rep):
                m = self.playbook('bulk.yml', dict(snap=snap))
                if m.extra['changed'] != 0:
                    raise RuntimeError('case 3: the second run reported changed')
                return m
            bash_info = ('for d in %s; do virsh -c qemu:///system snapshot-info "$d" %s >/dev/null || exit 1; done'
                         % (' '.join(names), snap))
            res = self.interleave('3', [
                ('ours', ours, None, None, None),
                ('bash', lambda rep: self.timed(bash_info), None, None, None),
                ('floor', lambda rep: self.playbook('floor.yml'), None, None, None),
                ('module', lambda rep: self.module('vm_snapshot', dict(domains=[LIVE + '*'], name=snap)),
                 None, None, None),
            ], reps)
            self.row('3', 'the same task again, nothing to do (%d domains)' % n, res['ours'], res['bash'], 0.5,
                     ours_label='ansible-playbook, all ok', base_label='bash loop of virsh snapshot-info')
            self.row('3f', 'floor: ansible-playbook with one ping task', res['floor'], res['bash'], None,
                     note='what no one-task playbook can go under on this machine',
                     ours_label='ansible-playbook + ansible.builtin.ping', base_label='bash loop of virsh snapshot-info')
            self.row('3m', 'the same, the module alone (no ansible-playbook)', res['module'], res['bash'], None,
                     ours_label='vm_snapshot as a process', base_label='bash loop of virsh snapshot-info')
        for name in names:
            self.remove_domain(name)

    # ------------------------------------------------------------ cases 1 and 3 at scale

    def scale_domains(self, count):
        """``count`` shut-off domains, each on its own empty 64 MiB qcow2 (snapshots are internal)."""
        names = ['%s%03d' % (SCALE, i) for i in range(1, count + 1)]
        log('cases 1s/3s: defining %d shut-off domains' % count)
        for name in names:  # a retry after a daemon restart finds the first attempt's domains
            self.remove_domain(name)
        for name in names:
            disk = self.work / (name + '.qcow2')
            if disk.exists():
                disk.unlink()
            sh(['qemu-img', 'create', '-q', '-f', 'qcow2', str(disk), '64M'])
            self.lv().defineXML(self.domain_xml(name, disk))
        return names

    def phase_note(self, runs, module_runs):
        """Where a whole run's time goes: medians of Ansible's phases and of the module alone."""
        phases = [m.extra.get('phases') for _r, m in runs if m.extra.get('phases')]
        if not phases:
            return ''
        med = {k: statistics.median(p[k] for p in phases) for k in ('start', 'task', 'end')}
        module = self.median(module_runs)
        return ('whole run %.2f s = Ansible start %.2f s (Python, imports, inventory, playbook) + the task %.2f s '
                '(fork, module build and transfer %.2f s, the module %.2f s as measured alone) + end %.2f s'
                % (self.median(runs), med['start'], med['task'], max(med['task'] - module, 0), module, med['end']))

    def cases_scale(self, cases):
        """Cases 1 and 3 at scale: N shut-off domains (default 100), whole run and module alone vs bash."""
        n = self.opts.scale if self.opts.scale is not None else (10 if self.quick else 100)
        if n <= 0:
            return
        reps = self.reps(5)
        names = self.scale_domains(n)
        pattern = SCALE + '*'
        loop = 'for d in %s; do virsh -c qemu:///system %%s || exit 1; done' % ' '.join(names)
        bash_create = loop % 'snapshot-create-as "$d" "$SNAP" >/dev/null'
        if 1 in cases:
            def snap_name(rep, key):
                return 's%d-%s' % (rep, key)

            def check(rep, key):
                got = self.count_snapshot(names, snap_name(rep, key))
                if got != n:
                    raise RuntimeError('case 1s: %s made %d of %d snapshots' % (key, got, n))

            res = self.interleave('1s', [
                ('api', lambda rep: self.timed([PY, '-c', BARE_CREATE, snap_name(rep, 'api')] + names),
                 None, lambda rep, m: check(rep, 'api'), None),
                ('ours', lambda rep: self.playbook('scale.yml', dict(snap=snap_name(rep, 'ours')), phases=True),
                 None, lambda rep, m: check(rep, 'ours'), None),
                ('bash', lambda rep: self.timed(bash_create, env=self.env(SNAP=snap_name(rep, 'bash'))),
                 None, lambda rep, m: check(rep, 'bash'), None),
                ('module', lambda rep: self.module('vm_snapshot', dict(domains=[pattern], name=snap_name(rep, 'module'))),
                 None, lambda rep, m: check(rep, 'module'), None),
            ], reps, between=lambda rep: self.delete_snapshots(
                names, [snap_name(rep, k) for k in ('ours', 'bash', 'module', 'api')]))
            self.row('1s', 'snapshot of %d shut-off domains, whole run' % n, res['ours'], res['bash'], 0.5,
                     note=self.phase_note(res['ours'], res['module']),
                     ours_label='ansible-playbook, one vm_snapshot task (domains: [%s])' % pattern,
                     base_label='bash loop of virsh snapshot-create-as')
            self.row('1sm', 'the same, the module alone (no ansible-playbook)', res['module'], res['bash'], 0.2,
                     ours_label='vm_snapshot as a process', base_label='bash loop of virsh snapshot-create-as')
            self.row('1sa', 'the same, bare libvirt calls: what no module can go under', res['api'], res['bash'], None,
                     note='one connection, snapshotCreateXML on every domain from 16 threads, nothing checked or read',
                     ours_label='python -c: libvirt.open + snapshotCreateXML per domain',
                     base_label='bash loop of virsh snapshot-create-as')
        if 3 in cases:
            snap = 'bench-idem'
            self.delete_snapshots(names, [snap])
            sh(bash_create, env=self.env(SNAP=snap))

            def ours(rep):
                m = self.playbook('scale.yml', dict(snap=snap), phases=True)
                if m.extra['changed'] != 0:
                    raise RuntimeError('case 3s: the second run reported changed')
                return m
            res = self.interleave('3s', [
                ('ours', ours, None, None, None),
                ('bash', lambda rep: self.timed(loop % ('snapshot-info "$d" %s >/dev/null' % snap)), None, None, None),
                ('floor', lambda rep: self.playbook('floor.yml'), None, None, None),
                ('module', lambda rep: self.module('vm_snapshot', dict(domains=[pattern], name=snap)), None, None, None),
            ], reps)
            self.row('3s', 'the same task again at %d shut-off domains, nothing to do, whole run' % n,
                     res['ours'], res['bash'], 0.5, note=self.phase_note(res['ours'], res['module']),
                     ours_label='ansible-playbook, all ok', base_label='bash loop of virsh snapshot-info')
            self.row('3sm', 'the same, the module alone (no ansible-playbook)', res['module'], res['bash'], 0.2,
                     ours_label='vm_snapshot as a process', base_label='bash loop of virsh snapshot-info')
            self.row('3sf', 'floor: ansible-playbook with one ping task', res['floor'], res['bash'], None,
                     ours_label='ansible-playbook + ansible.builtin.ping', base_label='bash loop of virsh snapshot-info')
        for name in names:
            self.remove_domain(name)

    # ------------------------------------------------------------ case 4

    def case_4(self):
        self.ensure_x1000()
        reps = self.reps(7)
        sample = 100 if self.quick else 1000
        per_snapshot = ('virsh -c qemu:///system snapshot-list --tree {d} >/dev/null || exit 1\n'
                        'for s in $(virsh -c qemu:///system snapshot-list --name {d} | head -n {n}); do\n'
                        '  virsh -c qemu:///system snapshot-info {d} "$s" >/dev/null || exit 1\n'
                        'done').format(d=X1000, n=sample)

        def ours(rep):
            m = self.module('vm_snapshot_info', dict(domain=X1000))
            facts = m.extra['result']['domains'][X1000]
            if facts['snapshot_count'] != 1000 or len(facts['snapshots']) != 1000:
                raise RuntimeError('case 4: module saw %d snapshots' % facts['snapshot_count'])
            m.extra['result'] = None
            return m

        def every(rep):
            m = self.timed(per_snapshot)
            if sample != 1000:  # quick mode: 100 snapshot-info calls, scaled to 1000
                m.seconds *= 1000 / sample
            return m
        empty = PREFIX + 'empty'
        self.remove_domain(empty)
        self.lv().defineXML(self.domain_xml(empty, self.work / (empty + '.qcow2')))
        res = self.interleave('4', [
            ('ours', ours, None, None, None),
            ('empty', lambda rep: self.module('vm_snapshot_info', dict(domain=empty)), None, None, None),
            ('tree', lambda rep: self.timed('virsh -c qemu:///system snapshot-list --tree %s >/dev/null' % X1000),
             None, None, None),
            ('all', every, None, None, 3),
        ], reps)
        note = '' if sample == 1000 else 'quick: 100 snapshot-info calls, time scaled x10'
        self.row('4a', 'all facts of a domain with 1000 snapshots', res['ours'], res['all'], 0.05, note=note,
                 ours_label='vm_snapshot_info as a process (python -m ..., as on the host)',
                 base_label='virsh snapshot-list --tree + snapshot-info per snapshot')
        self.row('4b', 'the same, vs the tree alone', res['ours'], res['tree'], 3.0,
                 ours_label='vm_snapshot_info as a process', base_label='virsh snapshot-list --tree')
        self.row('4f', 'floor: vm_snapshot_info of a domain with no snapshot', res['empty'], res['tree'], None,
                 note='Python start, imports, connect, exit_json: what any module process costs',
                 ours_label='vm_snapshot_info as a process, 0 snapshots', base_label='virsh snapshot-list --tree (1000)')
        self.remove_domain(empty)

    # ------------------------------------------------------------ cases 5-8, 10

    def backup_args(self, domain, dest, **extra):
        args = dict(domain=domain, dest=str(dest), state='present')
        args.update(extra)
        return args

    @staticmethod
    def mkdir(path):
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, 0o711)
        return path

    def clear(self, *paths):
        for p in paths:
            p = Path(p)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            elif p.exists() or p.is_symlink():
                p.unlink()

    def case_5(self, big):
        level = self.opts.level
        reps = self.reps(5)
        out = self.work / 'out' / 'c5'
        files = ' '.join(shlex.quote(f) for f in big['files'])
        sizes = {}

        def ours(rep):
            m = self.module('vm_backup', self.backup_args(big['name'], out / 'ours', compression_level=level))
            b = m.extra['result']['backup']
            sizes.setdefault('ours', []).append(os.path.getsize(b['path']))
            return m

        def base(rep):
            (out / 'base').mkdir(parents=True, exist_ok=True)
            m = self.timed("tar -I 'zstd -%d -T0' -cpSf %s %s 2>/dev/null"
                           % (level, out / 'base' / 'b.tar.zst', files))
            sizes.setdefault('base', []).append(os.path.getsize(out / 'base' / 'b.tar.zst'))
            return m

        def durable(rep):
            # the same tar, made durable as ours is (fsync of the archive): what writing it really costs
            (out / 'base').mkdir(parents=True, exist_ok=True)
            return self.timed("tar -I 'zstd -%d -T0' -cpSf %s %s 2>/dev/null && sync %s"
                              % (level, out / 'base' / 'b.tar.zst', files, out / 'base' / 'b.tar.zst'))
        res = self.interleave('5', [
            ('ours', ours, lambda rep: sync(), lambda rep, m: self.clear(out / 'ours'), None),
            ('tar', base, lambda rep: sync(), lambda rep, m: self.clear(out / 'base'), None),
            ('tar+sync', durable, lambda rep: sync(), lambda rep, m: self.clear(out / 'base'), None),
        ], reps)
        self.row('5', 'backup, %s qcow2 with %s of data, 3 snapshots, zstd -%d'
                 % (human(self.big_spec()['virt']), human(self.big_spec()['data']), level),
                 res['ours'], res['tar'], 1.1,
                 note='archive sizes: ours %s, tar %s' % (human(sizes['ours'][0]), human(sizes['base'][0])),
                 ours_label='vm_backup format=archive compression_level=%d (checksums included)' % level,
                 base_label="tar -I 'zstd -%d -T0' -cpSf" % level)
        self.row('5s', 'the same, vs tar made durable like ours', res['ours'], res['tar+sync'], None,
                 note='ours fsyncs its archive before it reports success; plain tar leaves it in the page cache',
                 ours_label='vm_backup format=archive', base_label="tar -I 'zstd -%d -T0' -cpSf && sync FILE" % level)

    def case_6(self, big):
        """The seed's zstd -19 --long=31 runs at ~1 MB/s here: one repetition (the ratio is far from 1 anyway).

        With --seed-sample N (quick mode: 64) the seed compresses only the first N MiB of each
        file, and its time and size are scaled to the whole files.
        """
        reps = self.reps(3)
        out = self.work / 'out' / 'c6'
        sample_mib = self.opts.seed_sample if self.opts.seed_sample is not None else (64 if self.quick else 256)
        total = sum(os.path.getsize(f) for f in big['files'])
        seed_files, scale = big['files'], 1.0
        if sample_mib:
            (out / 'sample').mkdir(parents=True, exist_ok=True)
            seed_files, sampled = [], 0
            for f in big['files']:
                dst = out / 'sample' / os.path.basename(f)
                with open(f, 'rb') as src, open(dst, 'wb') as d:
                    left = sample_mib * MIB
                    while left > 0:
                        block = src.read(min(left, 4 * MIB))
                        if not block:
                            break
                        d.write(block)
                        left -= len(block)
                seed_files.append(str(dst))
                sampled += os.path.getsize(dst)
            scale = total / sampled
        files = ' '.join(shlex.quote(f) for f in seed_files)
        sizes = {}

        def ours(rep):
            m = self.module('vm_backup', self.backup_args(big['name'], out / 'ours'))
            sizes.setdefault('ours', []).append(os.path.getsize(m.extra['result']['backup']['path']))
            return m

        def seed(rep):
            (out / 'base').mkdir(parents=True, exist_ok=True)
            m = self.timed("tar -I 'zstd -19 -T0 --long=31' -cvpSf %s %s >/dev/null 2>&1"
                           % (out / 'base' / 'b.tar.zst', files))
            m.seconds *= scale
            sizes.setdefault('base', []).append(os.path.getsize(out / 'base' / 'b.tar.zst') * scale)
            return m
        res = self.interleave('6', [
            ('ours', ours, lambda rep: sync(), lambda rep, m: self.clear(out / 'ours'), None),
            ('seed', seed, lambda rep: sync(), lambda rep, m: self.clear(out / 'base'), 1),
        ], reps)
        self.row('6', 'the same, module defaults vs the seed', res['ours'], res['seed'], 0.1,
                 note='sizes: ours %s, seed %s%s (source files %s, allocated %s)%s'
                 % (human(sizes['ours'][0]), human(sizes['base'][0]), ' (scaled)' if sample_mib else '',
                    human(total), human(os.stat(big['disk']).st_blocks * 512),
                    '; seed run on the first %d MiB of each file, time and size scaled x%.1f'
                    % (sample_mib, scale) if sample_mib else '; the seed ran once (it takes ~1 MB/s here)'),
                 ours_label='vm_backup defaults (archive, zstd 3, all cores)',
                 base_label="tar -I 'zstd -19 -T0 --long=31' -cvpSf", extrapolated=bool(sample_mib))
        self.clear(out)

    def case_7(self, big):
        reps = self.reps(5)
        out = self.work / 'out' / 'c7'
        files = ' '.join(shlex.quote(f) for f in big['files'])

        def ours(rep):
            return self.module('vm_backup', self.backup_args(big['name'], out / 'ours', format='directory'))

        def cp(rep):
            (out / 'base').mkdir(parents=True, exist_ok=True)
            return self.timed('cp --sparse=always %s %s' % (files, out / 'base'))

        def durable(rep):
            (out / 'base').mkdir(parents=True, exist_ok=True)
            return self.timed('cp --sparse=always %s %s && sync %s/*' % (files, out / 'base', out / 'base'))
        res = self.interleave('7', [
            ('ours', ours, lambda rep: sync(), lambda rep, m: self.clear(out / 'ours'), None),
            ('cp', cp, lambda rep: sync(), lambda rep, m: self.clear(out / 'base'), None),
            ('cp+sync', durable, lambda rep: sync(), lambda rep, m: self.clear(out / 'base'), None),
        ], reps)
        fstype = sh(['findmnt', '-n', '-o', 'FSTYPE', '-T', str(self.work)]).strip()
        self.row('7a', 'the same, format directory, on %s (no reflink)' % fstype, res['ours'], res['cp'], 1.1,
                 ours_label='vm_backup format=directory', base_label='cp --sparse=always')
        self.row('7s', 'the same, vs cp made durable like ours', res['ours'], res['cp+sync'], None,
                 note='ours fsyncs every file before it reports success; plain cp leaves them in the page cache',
                 ours_label='vm_backup format=directory', base_label='cp --sparse=always && sync FILES')

        # XFS with reflink, in a loop image the bench makes
        if shutil.which('mkfs.xfs') is None:
            log('case 7: mkfs.xfs missing: apt-get install -y xfsprogs')
            sh('DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends xfsprogs </dev/null')
        img = self.work / 'xfs.img'
        mnt = self.work / 'xfs'
        mnt.mkdir(exist_ok=True)
        with open(img, 'wb') as f:
            f.truncate(max(8 * GIB, 4 * os.stat(big['disk']).st_size))
        sh(['mkfs.xfs', '-q', '-m', 'reflink=1', str(img)])
        sh(['mount', '-o', 'loop', str(img), str(mnt)])
        os.chmod(mnt, 0o711)
        bigx = self.ensure_big(BIGX, where=mnt)
        files_x = ' '.join(shlex.quote(f) for f in bigx['files'])
        outx = mnt / 'out'

        def oursx(rep):
            m = self.module('vm_backup', self.backup_args(BIGX, outx / 'ours', format='directory'))
            return m

        def cpx(rep, extra):
            (outx / 'base').mkdir(parents=True, exist_ok=True)
            return self.timed('cp --sparse=always %s %s %s' % (extra, files_x, outx / 'base'))

        res = self.interleave('7x', [
            ('ours', oursx, lambda rep: sync(), lambda rep, m: self.clear(outx / 'ours'), None),
            ('cp-never', lambda rep: cpx(rep, '--reflink=never'), lambda rep: sync(),
             lambda rep, m: self.clear(outx / 'base'), None),
            ('cp', lambda rep: cpx(rep, ''), lambda rep: sync(), lambda rep, m: self.clear(outx / 'base'), None),
        ], reps)
        self.row('7b', 'the same on XFS (reflink=1, loop image)', res['ours'], res['cp-never'], 0.02,
                 ours_label='vm_backup format=directory (reflink)', base_label='cp --sparse=always --reflink=never')
        self.row('7c', 'the same on XFS, vs cp as it is today', res['ours'], res['cp'], None,
                 note='coreutils >= 9.0 cp reflinks by default (--reflink=auto), --sparse=always included',
                 ours_label='vm_backup format=directory (reflink)', base_label='cp --sparse=always')
        self.remove_domain(BIGX)
        sh(['umount', str(mnt)])
        img.unlink()

    def case_8(self, big):
        reps = self.reps(5)
        out = self.work / 'out' / 'c8'
        made = self.module('vm_backup', self.backup_args(big['name'], out / 'src'))
        archive = made.extra['result']['backup']['path']

        def ours(rep):
            # a new disk_dir each time; the domain (replaced, force) points at the previous one
            disk_dir = self.mkdir(out / ('ours-%d' % rep))
            m = self.module('vm_backup', dict(state='restored', src=archive, disk_dir=str(disk_dir), force=True))
            r = m.extra['result']['restored']
            if r['domain'] != big['name'] or len(r['snapshots']) != 3:
                raise RuntimeError('case 8: restored %s with %s' % (r['domain'], r['snapshots']))
            m.extra['result'] = None
            return m

        def base(rep):
            (out / 'base').mkdir(parents=True, exist_ok=True)
            return self.timed('tar -I zstd -xpSf %s -C %s' % (shlex.quote(archive), out / 'base'))

        def durable(rep):
            # the same tar, each extracted file made durable as ours makes the restored ones (fsync)
            (out / 'base').mkdir(parents=True, exist_ok=True)
            return self.timed('tar -I zstd -xpSf %s -C %s && find %s -type f -exec sync {} +'
                              % (shlex.quote(archive), out / 'base', out / 'base'))
        res = self.interleave('8', [
            ('ours', ours, lambda rep: sync(), lambda rep, m: self.clear(out / ('ours-%d' % (rep - 1))), None),
            ('tar', base, lambda rep: sync(), lambda rep, m: self.clear(out / 'base'), None),
            ('tar+sync', durable, lambda rep: sync(), lambda rep, m: self.clear(out / 'base'), None),
        ], reps)
        self.row('8', 'restore of 5 (domain, disks, 3 snapshots)', res['ours'], res['tar'], 1.2,
                 ours_label='vm_backup state=restored (verification included)', base_label='tar -I zstd -xpSf')
        self.row('8s', 'the same, vs tar -x made durable like ours', res['ours'], res['tar+sync'], None,
                 note='ours fsyncs every restored file before it reports success; plain tar -x leaves them in the'
                 ' page cache', ours_label='vm_backup state=restored',
                 base_label='tar -I zstd -xpSf && sync FILES')
        # the domain now points into out/ours: put the fixture back
        self.remove_domain(big['name'])
        self.clear(out)

    def case_10(self, big):
        reps = self.reps(5)
        out = self.work / 'out' / 'c10'
        how = []

        def cold(rep):
            how.append(self.evict(big['files']))
        res = self.interleave('10', [
            ('ours', lambda rep: self.module('vm_backup', self.backup_args(big['name'], out, format='directory')),
             cold, lambda rep, m: (self.clear(out), sync()), None),
            ('cat', lambda rep: self.timed('cat %s >/dev/null' % ' '.join(shlex.quote(f) for f in big['files'])),
             cold, None, None),
        ], reps)
        self.row('10', 'read limit: format directory, no reflink, cold cache', res['ours'], res['cat'], None,
                 note='cache: %s' % ('echo 3 > /proc/sys/vm/drop_caches before each run' if how[0] == 'drop_caches'
                                     else 'drop_caches refused: posix_fadvise(DONTNEED) on the files'),
                 ours_label='vm_backup format=directory', base_label='cat files > /dev/null')

    # ------------------------------------------------------------ case 12

    def case_12(self, big):
        """The big domain running: if_running live vs suspend vs the same backup shut off, and virtnbdbackup.

        virtnbdbackup (Debian's package) is what users would pick for running guests: a full copy
        (-l copy) of the same domain, uncompressed and with -z. It drops the internal snapshots
        ("snapshots found (not included into backup)"); ours carries them.
        """
        reps = self.reps(5)
        out = self.work / 'out' / 'c11'
        if shutil.which('virtnbdbackup') is None:
            log('case 12: virtnbdbackup missing: apt-get install -y virtnbdbackup')
            sh('DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends virtnbdbackup </dev/null')
        dom = self.lookup(big['name'])
        held, sizes = {}, {}

        def running(rep):
            if not dom.isActive():
                dom.create()
                settle(dom)
            sync()

        def shut_off(rep):
            if dom.isActive():
                dom.destroy()
            sync()

        def ours(key, **extra):
            def run(rep):
                m = self.module('vm_backup', self.backup_args(big['name'], out / key, **extra))
                b = m.extra['result']['backup']
                held.setdefault(key, []).append((rep, Measure(b['held_seconds'])))
                sizes.setdefault(key, []).append(os.path.getsize(b['path']))
                return m
            return run

        def nbd(key, extra):
            def run(rep):
                m = self.timed('virtnbdbackup -d %s -l copy -o %s %s' % (shlex.quote(big['name']), out / key, extra))
                sizes.setdefault(key, []).append(sum(p.stat().st_blocks * 512 for p in (out / key).rglob('*')
                                                     if p.is_file()))
                return m
            return run

        def clear(key):
            return lambda rep, m: self.clear(out / key)
        res = self.interleave('12', [
            ('live', ours('live'), running, clear('live'), None),
            ('suspend', ours('suspend', if_running='suspend'), running, clear('suspend'), None),
            ('offline', ours('offline'), shut_off, clear('offline'), None),
            ('nbd', nbd('nbd', ''), running, clear('nbd'), None),
            ('nbd-z', nbd('nbd-z', '-z'), running, clear('nbd-z'), None),
        ], reps)
        shut_off(None)
        self.rows.append(dict(case='12a', work='guest disks held by a live backup, seconds', ours=None, base=None,
                              ratio=None, target='<= 0.5 s', met='yes' if max(m.seconds for _r, m in held['live'])
                              <= 0.5 else 'NO',
                              note='live held %.3f s (median; max %.3f s); suspend held the guest %.1f s (median)'
                              % (self.median(held['live']), max(m.seconds for _r, m in held['live']),
                                 self.median(held['suspend'])),
                              ours_label='backup.held_seconds, if_running live',
                              base_label='backup.held_seconds, if_running suspend', n=None))
        self.row('12b', 'live backup of the running %s domain vs the same backup shut off'
                 % human(self.big_spec()['virt']), res['live'], res['offline'], 1.2,
                 ours_label='vm_backup if_running=live (running)', base_label='vm_backup (shut off)')
        self.row('12c', 'the same, vs if_running suspend', res['live'], res['suspend'], None,
                 note='suspend pauses the guest for the whole copy',
                 ours_label='vm_backup if_running=live', base_label='vm_backup if_running=suspend')
        self.row('12d', 'the same, vs virtnbdbackup full copy', res['live'], res['nbd'], 1.0,
                 note='sizes: ours %s (with the 3 internal snapshots), virtnbdbackup %s (%.2fx; target <= 0.9x; '
                 'it drops the snapshots)' % (human(sizes['live'][0]), human(sizes['nbd'][0]),
                                              sizes['live'][0] / sizes['nbd'][0]),
                 ours_label='vm_backup if_running=live', base_label='virtnbdbackup -l copy')
        self.row('12e', 'the same, vs virtnbdbackup -z', res['live'], res['nbd-z'], None,
                 note='virtnbdbackup -z size %s' % human(sizes['nbd-z'][0]),
                 ours_label='vm_backup if_running=live', base_label='virtnbdbackup -l copy -z')
        self.clear(out)

    # ------------------------------------------------------------ case 13

    def case_13(self, big):
        """restic repositories (issue 13) on a copy of the big domain, shut off, each pair in one run:
        13a the first backup into a fresh local repository vs the archive backup of case 5; 13b after 2% of
        the data was rewritten at 8 scattered places, the next backup into the repository vs a full archive
        backup, and the bytes it added; 13c a restore from the repository vs one from the archive."""
        reps = self.reps(3)
        out = self.work / 'out' / 'c13'
        self.mkdir(out)
        password = 'bench-%s' % uuid.uuid4().hex
        spec = self.big_spec()
        added = {}

        def repo_args(repo, **extra):
            return dict(domain=big['name'], repository=str(repo), repository_password=password,
                        repository_init=True, **extra)

        def into_repo(key, repo):
            def run(rep):
                m = self.module('vm_backup', repo_args(repo(rep)))
                b = m.extra['result']['backup']
                added.setdefault(key, []).append(b['added'])
                added.setdefault(key + '-size', []).append(b['size'])
                return m
            return run

        def archive(rep):
            m = self.module('vm_backup', self.backup_args(big['name'], out / 'archive'))
            added.setdefault('archive', []).append(os.path.getsize(m.extra['result']['backup']['path']))
            return m

        res = self.interleave('13a', [
            ('first', into_repo('first', lambda rep: out / ('first-%d' % rep)), lambda rep: sync(),
             lambda rep, m: self.clear(out / ('first-%d' % rep)), None),
            ('archive', archive, lambda rep: sync(), lambda rep, m: self.clear(out / 'archive'), None),
        ], reps)
        self.row('13a', 'first backup of the %s qcow2 (%s of data, 3 snapshots) into a new local repository'
                 % (human(spec['virt']), human(spec['data'])), res['first'], res['archive'], 2.5,
                 note='repository added %s; the archive is %s' % (human(added['first'][0]), human(added['archive'][0])),
                 ours_label='vm_backup repository=PATH (restic backup --stdin)',
                 base_label='vm_backup dest=DIR (zstd -3 archive)')

        repo = out / 'repo'
        self.module('vm_backup', repo_args(repo))
        chunk = out / 'change.bin'
        change = int(spec['data'] * 0.02) // 8 // 65536 * 65536
        chunk.write_bytes(os.urandom(change))
        rng = random.Random(13)

        def rewrite(rep):
            for _place in range(8):
                offset = rng.randrange(0, spec['virt'] - change) // 65536 * 65536
                sh(['qemu-io', '-f', 'qcow2', '-c', 'write -s %s %d %d' % (chunk, offset, change), big['disk']])
            sync()
        res = self.interleave('13b', [
            ('incremental', into_repo('incremental', lambda rep: repo), rewrite, None, None),
            ('archive', archive, lambda rep: sync(), lambda rep, m: self.clear(out / 'archive'), None),
        ], reps)
        share = max(a / f for a, f in zip(added['incremental'], added['archive']))
        self.row('13b', 'the next backup after 2% of the data changed (8 places) vs a full archive backup',
                 res['incremental'], res['archive'], 1.0,
                 note='added %s (median) per incremental, at most %.1f%% of the archive (target <= 5%%)'
                 % (human(statistics.median(added['incremental'])), 100 * share),
                 ours_label='vm_backup repository=PATH, second backup', base_label='vm_backup dest=DIR (archive)')
        self.rows.append(dict(case='13c', work='bytes the incremental added, vs the full archive', ours=None, base=None,
                              ratio=round(share, 4), target='<= 0.05', met='yes' if share <= 0.05 else 'NO',
                              note='restic data_added of each incremental / size of the archive',
                              ours_label='backup.added', base_label='archive size', n=None))

        made = self.module('vm_backup', self.backup_args(big['name'], out / 'src'))
        src = made.extra['result']['backup']['path']

        def restore(key, args):
            def run(rep):
                disk_dir = self.mkdir_fresh(out / ('%s-%d' % (key, rep)))
                m = self.module('vm_backup', dict(args, state='restored', disk_dir=str(disk_dir), force=True))
                if len(m.extra['result']['restored']['snapshots']) != 3:
                    raise RuntimeError('case 13: restored %s' % m.extra['result']['restored']['snapshots'])
                return m
            return run
        res = self.interleave('13d', [
            ('repository', restore('repository', dict(src='latest', domain=big['name'], repository=str(repo),
                                                      repository_password=password)),
             lambda rep: sync(), lambda rep, m: self.clear(out / ('repository-%d' % (rep - 1))), None),
            ('archive', restore('archive', dict(src=src)), lambda rep: sync(),
             lambda rep, m: self.clear(out / ('archive-%d' % (rep - 1))), None),
        ], reps)
        self.row('13d', 'restore from the repository vs from the archive', res['repository'], res['archive'], 2.0,
                 ours_label='vm_backup state=restored src=latest repository=PATH (restic dump)',
                 base_label='vm_backup state=restored src=ARCHIVE')
        self.remove_domain(big['name'])
        self.clear(out)

    def mkdir_fresh(self, path):
        self.clear(path)
        self.mkdir(path)
        return path

    # ------------------------------------------------------------ case 11

    def block_file(self):
        return self.work / (BLOCK + '.raw')

    def detach_loops(self):
        """Detach every loop device on case 11's file (a killed run leaves them)."""
        found = subprocess.run(['losetup', '-j', str(self.block_file()), '-n', '-O', 'NAME'], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, text=True, check=False).stdout.split()
        for dev in found:
            subprocess.run(['losetup', '-d', dev], check=False)

    def case_11(self, big):
        """A raw block device (a loop device) holding the image of case 5 as raw data: the virtual size, with its
        data and the zeros between; backed up by vm_backup vs read with dd into zstd at the same level."""
        reps = self.reps(5)
        out = self.work / 'out' / 'c11'
        raw = self.block_file()
        self.detach_loops()
        self.remove_domain(BLOCK)
        sh(['qemu-img', 'convert', '-q', '-U', '-f', 'qcow2', '-O', 'raw', str(big['disk']), str(raw)])
        dev = sh(['losetup', '-f', '--show', str(raw)]).strip()
        try:
            size = int(sh(['blockdev', '--getsize64', dev]).strip())
            data = os.stat(raw).st_blocks * 512
            log('case 11: %s, %s with %s of data' % (dev, human(size), human(data)))
            xml = self.domain_xml(BLOCK, dev, fmt='raw').replace(
                "<disk type='file' device='disk'>", "<disk type='block' device='disk'>").replace(
                "<source file='%s'/>" % dev, "<source dev='%s'/>" % dev)
            self.lv().defineXML(xml)
            # read once untimed: the first reader of a fresh loop device pays for its cache, whichever it is
            sh('dd if=%s of=/dev/null bs=1M status=none' % dev)
            sizes = {}

            def ours(rep):
                m = self.module('vm_backup', self.backup_args(BLOCK, out / 'ours'))
                sizes.setdefault('ours', []).append(m.extra['result']['backup']['size'])
                return m

            def base(rep):
                (out / 'base').mkdir(parents=True, exist_ok=True)
                target = out / 'base' / 'b.raw.zst'
                m = self.timed('dd if=%s bs=1M status=none | zstd -3 -T0 -q -o %s' % (dev, target))
                sizes.setdefault('base', []).append(os.path.getsize(target))
                return m
            res = self.interleave('11', [
                ('ours', ours, lambda rep: sync(), lambda rep, m: self.clear(out / 'ours'), None),
                ('dd|zstd', base, lambda rep: sync(), lambda rep, m: self.clear(out / 'base'), None),
            ], reps)
            self.row('11a', 'block device %s with %s of data: backup' % (human(size), human(data)), res['ours'],
                     res['dd|zstd'], 1.2, ours_label='vm_backup defaults (archive, zstd 3, all cores), a type=block disk',
                     base_label='dd if=DEV bs=1M | zstd -3 -T0')
            ratio = statistics.median(sizes['ours']) / statistics.median(sizes['base'])
            self.rows.append(dict(case='11b', work='its backup size vs the compressed data', ours=None, base=None,
                                  ratio=ratio, target='<= 1.05x', met='yes' if ratio <= 1.05 else 'NO',
                                  note='backup %s, dd | zstd %s (device %s, %s of data)'
                                  % (human(statistics.median(sizes['ours'])), human(statistics.median(sizes['base'])),
                                     human(size), human(data)),
                                  ours_label='size of the archive', base_label='size of dd | zstd -3 -T0', n=None))
        finally:
            self.remove_domain(BLOCK)
            subprocess.run(['losetup', '-d', dev], check=False)
            self.clear(out, raw)

    # ------------------------------------------------------------ case 9

    def case_9(self):
        reps = self.reps(5)
        virt = 2 * GIB if self.quick else 20 * GIB
        data = 32 * MIB if self.quick else 200 * MIB
        chunk = data // 20
        stride = virt // 20
        log('case 9: raw %s with %s of data, and a dense raw %s' % (human(virt), human(data), human(data)))
        sparse_disk = self.work / (SPARSE + '.raw')
        dense_disk = self.work / (DENSE + '.raw')
        kinds = ['random' if i % 2 == 0 else 'text' for i in range(20)]
        self.write_data(sparse_disk, virt, [(i * stride, chunk, kinds[i]) for i in range(20)], seed=9)
        self.write_data(dense_disk, data, [(i * chunk, chunk, kinds[i]) for i in range(20)], seed=9)
        definitions = {}
        for name, disk in ((SPARSE, sparse_disk), (DENSE, dense_disk)):
            self.remove_domain(name)
            definitions[name] = self.domain_xml(name, disk, fmt='raw')
            self.lv().defineXML(definitions[name])
        out = self.work / 'out' / 'c9'
        alloc = {}

        def both(name, disk, key):
            def run(rep):
                b = self.module('vm_backup', self.backup_args(name, out / key / 'b'))
                archive = b.extra['result']['backup']['path']
                r = self.module('vm_backup', dict(state='restored', src=archive,
                                                  disk_dir=str(self.mkdir(out / key / 'r')), force=True))
                restored = [f['path'] for f in r.extra['result']['restored']['files'] if f['role'] == 'disk']
                alloc.setdefault(key, []).append((os.stat(restored[0]).st_blocks * 512,
                                                  os.stat(restored[0]).st_size))
                self.rss.append(('9', key + ' backup', b.self_kib, b.children_kib))
                self.rss.append(('9', key + ' restore', r.self_kib, r.children_kib))
                return Measure(b.seconds + r.seconds, extra=dict(archive=os.path.getsize(archive)))
            return run
        res = self.interleave('9', [
            ('sparse', both(SPARSE, sparse_disk, 'sparse'), lambda rep: sync(),
             lambda rep, m: (self.clear(out / 'sparse'), self.lv().defineXML(definitions[SPARSE])), None),
            ('dense', both(DENSE, dense_disk, 'dense'), lambda rep: sync(),
             lambda rep, m: (self.clear(out / 'dense'), self.lv().defineXML(definitions[DENSE])), None),
        ], reps)
        src_alloc = os.stat(sparse_disk).st_blocks * 512
        got_alloc, got_size = alloc['sparse'][0]
        self.row('9a', 'raw %s disk with %s of data: backup + restore' % (human(virt), human(data)),
                 res['sparse'], res['dense'], 2.0,
                 ours_label='vm_backup present + restored, sparse raw', base_label='the same on a dense raw disk')
        ratio = got_alloc / src_alloc
        self.rows.append(dict(case='9b', work='restored allocation vs the source\'s', ours=None, base=None,
                              ratio=ratio, target='<= 1.1x', met='yes' if ratio <= 1.1 and got_size == virt else 'NO',
                              note='restored %s allocated of %s apparent; source %s allocated'
                              % (human(got_alloc), human(got_size), human(src_alloc)),
                              ours_label='du of the restored disk', base_label='du of the source disk', n=None))
        for name in (SPARSE, DENSE):
            self.remove_domain(name)
        self.clear(sparse_disk, dense_disk, out)

    # ------------------------------------------------------------ driver

    def reps(self, default):
        if self.opts.reps:
            return self.opts.reps
        return 2 if self.quick else default

    def run(self, cases):
        self.prepare()
        steps = []
        if cases & {1, 2, 3}:
            steps.append(('1-3', lambda: self.cases_1_2_3(cases)))
        if cases & {1, 3}:
            steps.append(('1s-3s', lambda: self.cases_scale(cases)))
        if 4 in cases:
            steps.append(('4', self.case_4))
        big_cases = [c for c in (5, 6, 7, 10, 11, 12, 8) if c in cases]
        for c in big_cases:
            steps.append((str(c), lambda c=c: getattr(self, 'case_%d' % c)(self.ensure_big())))
        if 13 in cases:
            steps.append(('13', lambda: self.case_13(self.ensure_big(REPO_DOM))))
        if 9 in cases:
            steps.append(('9', self.case_9))
        for label, step in steps:
            for attempt in (1, 2):
                rows, rss = len(self.rows), len(self.rss)
                restarts = self.daemon_starts()
                try:
                    step()
                    break
                except Exception as exc:  # one failing case must not hide the others' numbers
                    traceback.print_exc()
                    del self.rows[rows:], self.rss[rss:]
                    lost = isinstance(exc, libvirt.libvirtError) and exc.get_error_domain() == libvirt.VIR_FROM_RPC
                    if attempt == 1 and (lost or restarts != self.daemon_starts() or not self.answers()):
                        log('case %s: libvirtd restarted under it (another session?); waiting, then again' % label)
                        if self.wait_libvirt():
                            continue
                    self.errors.append('case %s: %s' % (label, str(exc).splitlines()[0] if str(exc) else repr(exc)))
                    log('case %s FAILED: %s' % (label, exc))
                    break

    @staticmethod
    def daemon_starts():
        """Which libvirtd is running (its pid), to notice a restart."""
        try:
            return Path('/run/libvirtd.pid').read_text().strip()
        except OSError:
            return None

    def answers(self):
        try:
            self.lv().getLibVersion()
            return True
        except libvirt.libvirtError:
            return False

    # ------------------------------------------------------------ report

    @staticmethod
    def table(rows, with_date=False):
        head = ['case', 'work', 'ours (median s)', 'baseline (median s)', 'ratio ours/base', 'target', 'met?',
                'commit']
        if with_date:
            head.append('run')
        lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
        for r in rows:
            base = fmt_s(r['base']) + (' (extrapolated)' if r.get('extrapolated') else '')
            cells = [r['case'], r['work'], fmt_s(r['ours']), base,
                     '%.3fx' % r['ratio'] if r['ratio'] is not None else '-', r['target'], r['met'], fmt_commit(r)]
            if with_date:
                cells.append(r.get('when', '?'))
            lines.append('| ' + ' | '.join(cells) + ' |')
        return '\n'.join(lines)

    @staticmethod
    def details(rows):
        out = []
        for r in rows:
            if r['ours_label']:
                out.append('- %s: ours = %s; baseline = %s%s%s%s' % (
                    r['case'], r['ours_label'], r['base_label'],
                    '; n = %d/%d' % tuple(r['n']) if r['n'] else '', '. ' + r['note'] if r['note'] else '',
                    '. Load average %.1f on %d cores as it finished' % (r['load'], os.cpu_count())
                    if r.get('load') is not None else ''))
        return out

    def rss_rows(self, when):
        seen = {}
        for case, key, self_kib, _children_kib in self.rss:
            seen[(case, key)] = max(seen.get((case, key), 0), self_kib or 0)
        return [dict(case=case, run=key, kib=kib, when=when, **self.provenance) for (case, key), kib in seen.items()]

    def report(self, cases, started):
        when = datetime.datetime.now().astimezone().strftime('%Y-%m-%d %H:%M')
        for r in self.rows:
            r['when'] = when
            r.update(self.provenance)
            if self.opts.note:
                r['note'] = '; '.join(x for x in (r['note'], self.opts.note) if x)
        rss = self.rss_rows(when)
        print()
        print(self.table(self.rows))
        print()
        print('\n'.join(self.details(self.rows)))
        if rss:
            print('\npeak RSS of the module process (VmHWM, max over repetitions):')
            print('\n'.join('  case %s %s: %s' % (e['case'], e['run'], human(e['kib'] * 1024)) for e in rss))
        for e in self.errors:
            print('ERROR ' + e)
        minutes = (time.monotonic() - started) / 60
        machine = machine_info()
        full_size = not self.quick and not self.opts.reps
        if full_size:
            # RESULTS.md holds the latest full-size result of every case: a subset run
            # (make bench CASES=4) replaces its own cases' rows and keeps the others.
            state_path = BENCH / 'results.json'
            try:
                state = json.loads(state_path.read_text())
            except (OSError, ValueError):
                state = dict(rows=[], rss=[], raw={})
            ran = {case_of(r['case']) for r in self.rows} | {case_of(c) for c in self.raw}
            ran |= cases if cases == set(range(1, 12)) else set()
            state['rows'] = [r for r in state['rows'] if case_of(r['case']) not in ran] + self.rows
            state['rows'].sort(key=lambda r: (case_of(r['case']), r['case']))
            state['rss'] = [e for e in state['rss'] if case_of(e['case']) not in ran] + rss
            state['rss'].sort(key=lambda e: (case_of(e['case']), e['case'], e['run']))
            state['raw'] = {k: v for k, v in state.get('raw', {}).items()
                            if case_of(k) not in ran}
            state['raw'].update(self.raw)
            state['errors'] = [e for e in state.get('errors', []) if e.get('case') not in cases | ran] + [
                dict(case=case_of(e.split(':')[0].split()[-1]), text=e, when=when) for e in self.errors]
            if cases:
                state['machine'] = machine
            machine = state.get('machine', machine)
            state_path.write_text(json.dumps(state, indent=1, sort_keys=True) + '\n')
            rows, rss_all, raw, errors = state['rows'], state['rss'], state['raw'], [e['text'] for e in state['errors']]
            path = BENCH / 'RESULTS.md'
            intro = ('Written by tests/bench/run.py (`make bench`); this update on %s ran cases %s in %.0f min. Each'
                     ' row shows when its case last ran at full size, and at which commit.'
                     % (when, fmt_cases(cases), minutes) if cases else
                     'Written by tests/bench/run.py --render on %s from tests/bench/results.json (no case ran).'
                     ' Each row shows when its case last ran at full size, and at which commit.' % when)
        else:
            rows, rss_all, raw, errors = self.rows, rss, self.raw, self.errors
            path = BENCH / 'output' / ('RESULTS-quick.md' if self.quick else 'RESULTS-partial.md')
            intro = ('Written by tests/bench/run.py on %s, %s, cases %s, %.0f min; not merged into'
                     ' tests/bench/RESULTS.md.' % (when, 'quick mode' if self.quick else '--reps %s' % self.opts.reps,
                                                   fmt_cases(cases), minutes))
        path.parent.mkdir(parents=True, exist_ok=True)
        text = ['# kvm.snapshots benchmark results', '', intro, '',
                'Ratio = ours / baseline: the median over repetitions of the ratio of the two runs of the same'
                ' repetition (variants interleaved, order flipped every repetition); times are medians in seconds.'
                ' Only the ratios mean anything: the machine is shared and noisy. How each case is measured:'
                ' tests/bench/README.md.', '', machine, '', self.table(rows, with_date=full_size), '', COMMIT_LEGEND, '',
                '## What ran', ''] + self.details(rows)
        if rss_all:
            text += ['', '## Peak RSS of the module process', '',
                     'VmHWM of the module\'s Python process (its own peak RSS since exec), read as it exits, max over'
                     ' repetitions. zstd runs as a child process and is not included.', '',
                     '| case | run | peak RSS | commit |', '|---|---|---|---|']
            text += ['| %s | %s | %s | %s |' % (e['case'], e['run'], human(e['kib'] * 1024), fmt_commit(e))
                     for e in rss_all]
        if errors:
            text += ['', '## Errors', ''] + ['- ' + e for e in errors]
        text += ['', '## Raw times (s, in repetition order)', '', '```', json.dumps(raw, indent=1, sort_keys=True),
                 '```', '']
        path.write_text('\n'.join(text))
        log('report written to %s' % path.relative_to(REPO))


def case_of(label):
    """The case number of a row label ('4a' -> 4, '1-2' -> 1)."""
    return int(re.match(r'[0-9]+', str(label)).group(0))


def fmt_cases(cases):
    return ','.join(str(c) for c in sorted(cases))


def fmt_s(v):
    return '-' if v is None else ('%.3f' % v if v < 10 else '%.1f' % v)


def fmt_num(v):
    return ('%.2f' % v).rstrip('0').rstrip('.')


COMMIT_LEGEND = ('Commit: the collection\'s commit when the row\'s run started; "+ changes" when the work tree'
                 ' differed from it (tracked or untracked files, the bench\'s own results aside), computed by the'
                 ' run. "(reconstructed)": a row from before the bench recorded it, the commit read from git'
                 ' history (HEAD at the time the row was written); "tree ?": whether the work tree had changes'
                 ' was not recorded.')
# rewritten by every full-size run: not a change to what the bench measures
OWN_RESULTS = ('tests/bench/RESULTS.md', 'tests/bench/results.json')


def provenance():
    """The commit this run measures and whether the work tree differs from it."""
    def git(*args):
        try:
            return subprocess.run(['git', '-C', str(REPO)] + list(args), stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
    commit = (git('rev-parse', '--short', 'HEAD') or '').strip() or None
    status = git('status', '--porcelain', '--untracked-files=all') if commit else None
    if status is None:
        return dict(commit=commit, dirty=None, changed=None)
    changed = [line[3:] for line in status.splitlines() if line[3:] not in OWN_RESULTS]
    return dict(commit=commit, dirty=bool(changed), changed=len(changed))


def fmt_commit(r):
    commit = r.get('commit') or '?'
    if r.get('dirty'):
        commit += ' + changes' + (' (%d files)' % r['changed'] if r.get('changed') else '')
    elif r.get('dirty') is None:
        commit += ' tree ?'
    if r.get('reconstructed'):
        commit += ' (reconstructed)'
    return commit


# case 1sa: the libvirt calls alone, as a process (python -c BARE_CREATE SNAP DOMAIN...)
BARE_CREATE = """
import sys
from concurrent.futures import ThreadPoolExecutor
import libvirt
conn = libvirt.open('qemu:///system')
xml = '<domainsnapshot><name>%s</name></domainsnapshot>' % sys.argv[1]
with ThreadPoolExecutor(16) as pool:
    list(pool.map(lambda name: conn.lookupByName(name).snapshotCreateXML(xml, 0), sys.argv[2:]))
"""


def ansible_phases(text, started_at, seconds):
    """Split one ansible-playbook run by its log_path lines: {start, task, end} in seconds.

    Each line starts with the time Ansible logged it (``2026-12-01 23:10:00,123``).
    """
    def at(line):
        stamp = re.match(r'(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})', line)
        if not stamp:
            return None
        when = datetime.datetime.strptime(stamp.group(1), '%Y-%m-%d %H:%M:%S')
        return time.mktime(when.timetuple()) + int(stamp.group(2)) / 1000.0
    lines = text.splitlines()
    banner = next(at(line) for line in lines if '| TASK [' in line)
    done = next(at(line) for line in lines if re.search(r'\| (ok|changed): \[', line))
    return dict(start=banner - started_at, task=done - banner, end=started_at + seconds - done)


def load_now():
    try:
        return round(os.getloadavg()[0], 1)
    except OSError:
        return None


def machine_info():
    def out(cmd):
        try:
            return subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  text=True, check=False).stdout.strip().splitlines()[0]
        except (IndexError, OSError):
            return '?'
    return ('Machine (at the latest update): %d cores, %s RAM, %s; libvirt %s, %s, %s, %s.'
            % (os.cpu_count(), human(os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES')),
               out('uname -sr'), out('virsh -v'),
               out('qemu-img --version'), out('zstd --version'), out('tar --version')))


def parse_cases(text):
    cases = set()
    for part in text.split(','):
        part = part.strip()
        if not part:
            continue
        if '-' in part:
            lo, hi = part.split('-', 1)
            cases.update(range(int(lo), int(hi) + 1))
        else:
            cases.add(int(part))
    bad = cases - set(CASE_WORK)
    if bad:
        raise SystemExit('unknown case(s): %s (%d-%d)' % (sorted(bad), min(CASE_WORK), max(CASE_WORK)))
    return cases


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--cases', default=os.environ.get('CASES') or '1-%d' % max(CASE_WORK), help='e.g. 4,5 or 1-3 (default all)')
    parser.add_argument('--quick', action='store_true', default=os.environ.get('QUICK', '').lower() not in ('', '0', 'no', 'false'),
                        help='smoke check: 2 repetitions, 4 domains, 1 GiB image, 2 GiB sparse disk')
    parser.add_argument('--reps', type=int, help='repetitions for every case')
    parser.add_argument('--level', type=int, default=3, help='zstd level for case 5 (default 3)')
    parser.add_argument('--seed-sample', type=int, metavar='MIB',
                        help='case 6: run the seed on the first MIB MiB of each file and scale (default 256, quick 64; '
                             '0: the whole files, about 30-50 min here)')
    parser.add_argument('--note', default=os.environ.get('BENCH_NOTE'),
                        help='a remark added to every row of this run, e.g. what else loads the machine')
    parser.add_argument('--domains', type=int, help='running domains for cases 1-3 (default 20)')
    parser.add_argument('--scale', type=int,
                        help='shut-off domains for cases 1 and 3 at scale (rows 1s, 3s; default 100, quick 10; 0: skip)')
    parser.add_argument('--cache', default=os.environ.get('KVMSNAP_BENCH_CACHE', '/var/lib/libvirt/images/kvmsnap-bench-cache'))
    parser.add_argument('--work', default='/var/lib/libvirt/images/kvmsnap-bench-work')
    parser.add_argument('--keep-work', action='store_true', help='do not remove domains and work files at the end')
    parser.add_argument('--purge-cache', action='store_true', help='remove the cached fixtures (and x1000) and exit')
    parser.add_argument('--render', action='store_true',
                        help='run nothing: write tests/bench/RESULTS.md again from tests/bench/results.json')
    opts = parser.parse_args()
    # clean up on Ctrl-C and on kill, also when started in the background (where SIGINT is ignored)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda _sig, _frame: sys.exit(143))
    bench = Bench(opts)
    if opts.purge_cache:
        bench.cleanup()
        bench.remove_domain(X1000)
        shutil.rmtree(opts.cache, ignore_errors=True)
        disk = Path('/var/lib/libvirt/images') / (X1000 + '.qcow2')
        if disk.exists():
            disk.unlink()
        log('cache purged')
        return 0
    if opts.render:
        bench.report(set(), time.monotonic())
        return 0
    cases = parse_cases(opts.cases)
    started = time.monotonic()
    log('cases %s, %s; work dir %s, cache %s' % (fmt_cases(cases),
                                                 'quick' if opts.quick else 'full', opts.work, opts.cache))
    try:
        bench.run(cases)
    finally:
        if not opts.keep_work:
            try:
                bench.cleanup()
            except libvirt.libvirtError as exc:  # the daemon went away: try once more, then leave it
                log('cleanup: %s; once more' % exc)
                if bench.wait_libvirt():
                    bench.cleanup()
    bench.report(cases, started)
    return 1 if bench.errors else 0


if __name__ == '__main__':
    sys.exit(main())
