# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""What a backup does about a running domain: overlay, pause or shut it down for the copy, and give it back."""

from __future__ import annotations

import time

from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import (
    InvalidInput,
    OperationFailed,
    domain_state,
    libvirt,
    translate,
)


def wait_state(dom, wanted, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if domain_state(dom) in wanted:
            return True
        time.sleep(0.25)
    return domain_state(dom) in wanted


def running_action(dom, state, if_running):
    """What to do about a domain that is not shut off: None, 'live', 'shutdown', 'suspend' or 'paused'."""
    if state == 'shutoff':
        return None
    if state in ('running', 'blocked', 'paused'):
        if if_running == 'fail':
            raise InvalidInput("domain '%s' is %s: shut it down first, or set if_running to live (copy it while "
                               "it runs), shutdown (stop it for the copy, start it after) or suspend (pause it for "
                               "the copy)" % (dom.name(), state))
        if state == 'paused':
            return 'paused'  # already frozen: copy as it is, leave it paused
        if if_running == 'shutdown' and not dom.isPersistent():
            raise InvalidInput("domain '%s' is transient: a shutdown would remove it; use if_running: live or "
                               "suspend" % dom.name())
        return if_running
    raise InvalidInput("domain '%s' is in state '%s': shut it off first ('virsh destroy %s')"
                       % (dom.name(), state, dom.name()))


MODES = {None: 'offline', 'shutdown': 'offline', 'suspend': 'suspended', 'paused': 'suspended'}


class DomainHold:
    """Pauses or shuts down a domain for the copy, and brings it back however the copy ends."""

    def __init__(self, dom, action, timeout):
        self.dom = dom
        self.name = dom.name()
        self.action = action
        self.mode = MODES[action]
        self.timeout = timeout
        self.touched = False    # set before the call: an interruption inside it still gives the domain back
        self.starting = False   # create() was called: a domain no longer shut off was started by this run
        self.since = None
        self.held = 0.0         # seconds the guest was paused or down for the copy

    def seconds(self):
        """How long the guest's disks had the overlay: never, without one."""
        return None

    def take(self):
        self.since = time.monotonic()
        if self.action == 'shutdown':
            self.touched = True
            self.dom.shutdown()
            if not wait_state(self.dom, ('shutoff',), self.timeout):
                self.touched = False    # still running: nothing to start again, and no second wait
                raise OperationFailed("domain '%s' did not shut down within %d s (does its guest handle ACPI "
                                      "shutdown?): raise shutdown_timeout, shut it down yourself, or use "
                                      "if_running: suspend" % (self.name, self.timeout))
        elif self.action == 'suspend':
            self.touched = True
            self.dom.suspend()

    def give_back(self):
        """Start or resume the domain again: ``(what was done or None, error text or None)``."""
        if not self.touched:
            return None, None
        self.held = time.monotonic() - self.since
        # ``touched`` is cleared only once the domain is back: a signal in the middle of this
        # leaves it set, and the unwinding calls this again.
        try:
            if self.action == 'suspend':
                if domain_state(self.dom) != 'paused':
                    self.touched = False
                    return None, None   # resumed (by this run before an interruption, or by someone else)
                self.dom.resume()
                self.touched = False
                return "domain '%s' was resumed" % self.name, None
            if self.starting and domain_state(self.dom) != 'shutoff':
                self.touched = False
                return "domain '%s' was started again" % self.name, None
            # An interrupted wait: the guest was asked to shut down and may still be going down.
            if not wait_state(self.dom, ('shutoff',), self.timeout):
                self.touched = False
                return None, ("domain '%s' was asked to shut down and is still %s: check it, and start it when it "
                              "is off ('virsh start %s')" % (self.name, domain_state(self.dom), self.name))
            self.starting = True
            self.dom.create()
            self.touched = False
            return "domain '%s' was started again" % self.name, None
        except libvirt.libvirtError as exc:
            self.touched = False
            return None, ('starting it again failed: %s: start it by hand (virsh start/resume %s)'
                          % (translate(exc), self.name))
