# -*- coding: utf-8 -*-
# Copyright: (c) 2026, kvm.snapshots contributors
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

"""_backup/digest.py: the content digest is the documented one whatever the layout, holes cost nothing,
and a file that shrinks while it is hashed is reported."""

from __future__ import annotations

import hashlib
import os

import pytest

pytest.importorskip('lxml')

from ansible_collections.kvm.snapshots.plugins.module_utils._backup.digest import (  # noqa: E402
    ContentDigest,
    digest_bytes,
    file_digest,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._backup.files import (  # noqa: E402
    copy_regions,
    data_regions,
)
from ansible_collections.kvm.snapshots.plugins.module_utils._libvirt import OperationFailed  # noqa: E402
from ansible_collections.kvm.snapshots.tests.unit.plugins.module_utils._backup.helpers import (  # noqa: E402
    allocated,
    holes_here,
    random_layout,
    reference_digest,
    write_sparse,
)


@pytest.mark.parametrize('seed', range(12))
def test_content_digest_matches_the_reference_whatever_the_layout(tmp_path, seed):
    rng, data, regions = random_layout(seed)
    size = len(data)
    path = tmp_path / 'f'
    path.write_bytes(bytes(data))
    expected = reference_digest(str(path))
    # fed region by region, in pieces of odd sizes, with the gaps left as holes
    digest = ContentDigest(size)
    for offset, length in regions:
        done = 0
        while done < length:
            step = min(rng.choice([1, 777, 65536, 1 << 20]), length - done)
            chunk = bytearray(data[offset + done:offset + done + step])
            digest.update(offset + done, chunk, step)
            done += step
    assert digest.hexdigest() == expected
    # fed densely
    assert digest_bytes(bytes(data)) == expected


@pytest.mark.parametrize('seed', range(12))
def test_file_digest_and_copy_regions_match_the_reference(tmp_path, seed):
    _rng, data, regions = random_layout(seed)
    src_path, dst_path = tmp_path / 'src', tmp_path / 'dst'
    write_sparse(src_path, data, regions)
    expected = reference_digest(str(src_path))
    src = os.open(str(src_path), os.O_RDONLY)
    dst = os.open(str(dst_path), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        # what the file system reports and what the module was told give the same digest
        assert file_digest(src, len(data), data_regions(src, len(data))) == expected
        assert file_digest(src, len(data), regions) == expected
        found = data_regions(src, len(data))
        copy_regions(src, dst, regions)
        os.ftruncate(dst, len(data))
    finally:
        os.close(src)
        os.close(dst)
    assert dst_path.read_bytes() == bytes(data)
    if not holes_here(tmp_path):
        return
    # the module's map is the file system's, and the copy has data exactly where the source has
    assert found == allocated(src_path)
    assert allocated(dst_path) == allocated(src_path)


def test_file_digest_reports_a_file_that_shrank(tmp_path):
    path = tmp_path / 'f'
    path.write_bytes(b'x' * 100000)
    fd = os.open(str(path), os.O_RDONLY)
    try:
        with pytest.raises(OperationFailed, match='shrank'):
            file_digest(fd, 200000, [(0, 200000)])
    finally:
        os.close(fd)


def sparse_reference_digest(size, data):
    """The documented digest of a file of ``size`` bytes, zeros but for ``data`` ({offset: bytes}), built piece by
    piece: SHA-256 over the SHA-256 of each 64 KiB piece (the last one shorter), runs of zero pieces in bulk."""
    piece = 65536
    zero_digest = hashlib.sha256(bytes(piece)).digest()
    touched = {}
    for offset, blob in data.items():
        for number in range(offset // piece, (offset + len(blob) - 1) // piece + 1):
            start = number * piece
            content = touched.setdefault(number, bytearray(min(piece, size - start)))
            lo, hi = max(offset, start), min(offset + len(blob), start + len(content))
            content[lo - start:hi - start] = blob[lo - offset:hi - offset]
    count = -(-size // piece)
    top = hashlib.sha256()
    number = 0
    while number < count:
        if number in touched:
            top.update(hashlib.sha256(bytes(touched.pop(number))).digest())
            number += 1
            continue
        if number == count - 1 and size % piece:
            top.update(hashlib.sha256(bytes(size % piece)).digest())
            number += 1
            continue
        stop = min([n for n in touched if n > number] + [count - 1 if size % piece else count])
        stop = min(stop, number + 65536)
        top.update(zero_digest * (stop - number))
        number = stop
    return top.hexdigest()


def test_sparse_reference_digest_is_the_dense_one(tmp_path):
    """The reference for huge files agrees with the obvious one where both can run."""
    size = 5 * 65536 + 123
    data = {0: b'a', 65530: b'across a piece boundary', 5 * 65536 + 100: b'the short last piece'}
    content = bytearray(size)
    for offset, blob in data.items():
        content[offset:offset + len(blob)] = blob
    (tmp_path / 'f').write_bytes(bytes(content))
    assert sparse_reference_digest(size, data) == reference_digest(str(tmp_path / 'f'))
    assert sparse_reference_digest(size, {}) == hashlib.sha256(b''.join(
        hashlib.sha256(bytes(n)).digest() for n in (65536,) * 5 + (123,))).hexdigest()


@pytest.mark.parametrize('size, data', [
    (1 << 40, {(1 << 40) - 3: b'end'}),                                 # 1 TiB of nothing, then 3 bytes
    ((1 << 32) + 100, {0: b'a', (1 << 31) + 65530: b'across pieces'}),  # a hole for a short last piece
    ((1 << 33) + 1, {}),                                                # all hole, a last piece of 1 byte
], ids=['1TiB-end', '4GiB-short-last', '8GiB-empty'])
def test_content_digest_of_a_huge_hole_is_cheap_and_right(size, data):
    digest = ContentDigest(size)
    for offset in sorted(data):
        digest.update(offset, data[offset], len(data[offset]))
    assert digest.hexdigest() == sparse_reference_digest(size, data)
