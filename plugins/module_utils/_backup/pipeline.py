# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""A writer thread: writes run in order beside the hashing, from a fixed pool of buffers."""

from __future__ import annotations

import queue
import threading

from .files import CHUNK


class Pipeline:
    """Runs writes on one background thread, in order, from a fixed pool of buffers.

    Hashing (main thread) and writing (this thread) overlap; both release the GIL.
    Memory stays at ``buffers`` chunks whatever the data size. The first error
    stops the writes and comes back out of ``acquire`` or ``drain``.
    """

    def __init__(self, buffers=4, size=CHUNK):
        self.free = queue.Queue()
        for _count in range(buffers):
            self.free.put(bytearray(size))
        self.jobs = queue.Queue()
        self.error = None
        self.thread = threading.Thread(target=self._work, name='kvm-snapshots-writer', daemon=True)
        self.thread.start()

    def _work(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            func, args, buf = job
            try:
                if self.error is None:
                    func(*args)
            except BaseException as exc:  # handed to the main thread
                self.error = exc
            finally:
                if buf is not None:
                    self.free.put(buf)

    def _raise(self):
        if self.error is not None:
            raise self.error

    def acquire(self):
        buf = self.free.get()
        if self.error is not None:
            self.free.put(buf)
            self._raise()
        return buf

    def release(self, buf):
        self.free.put(buf)

    def submit(self, func, args, buf=None):
        self.jobs.put((func, args, buf))

    def drain(self):
        done = threading.Event()
        self.jobs.put((done.set, (), None))
        done.wait()
        self._raise()

    def close(self):
        if self.thread.is_alive():
            self.jobs.put(None)
            self.thread.join()

    def stop(self, why):
        """Drop the writes still queued (an error elsewhere ended the work) and end the thread."""
        self.error = self.error or why
        self.close()
