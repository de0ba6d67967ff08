"""The harness's listening ports stay out of the range outgoing connections draw from.

A ZooKeeper member whose election port was picked from the ephemeral range
exited with code 14 in a CI campaign: a rebind found its port taken.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

from sidecar_harness.localstore import ephemeral_range, free_ports, listening_port_range


def test_the_ports_are_free_distinct_and_outside_the_ephemeral_range() -> None:
    lo, hi = ephemeral_range()
    ports = free_ports(30, random.Random(7))
    assert len(set(ports)) == 30
    assert not any(lo <= p <= hi for p in ports), ports
    for p in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", p))


def test_the_range_is_read_from_proc_and_a_bad_file_falls_back(tmp_path: Path) -> None:
    f = tmp_path / "range"
    f.write_text("40000\t50000\n")
    assert ephemeral_range(f) == (40000, 50000)
    for bad in ("", "1 2 3", "x y", "50000 40000", "0 70000"):
        f.write_text(bad)
        assert ephemeral_range(f) == (32768, 60999)
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)


def test_the_wider_side_is_chosen_and_a_full_range_leaves_nothing() -> None:
    assert listening_port_range((32768, 60999)) == range(16384, 32768)
    assert listening_port_range((1024, 50000)) == range(50001, 65536)
    assert len(listening_port_range((1024, 65535))) == 0
