"""Every transport failure of an etcd call is StoreUnavailable, never a crash of the lease."""

from __future__ import annotations

import asyncio

import pytest

from sidecar.backends.base import StoreUnavailable
from sidecar.backends.etcd import _store_errors


def test_a_write_on_an_ended_keepalive_stream_is_an_outage_not_a_bug() -> None:
    # grpc.aio raises this for a write on a stream that a member restart ended;
    # uncaught, it ended a leader's term as "internal-error" and skipped its marker.
    with pytest.raises(StoreUnavailable, match="lease keepalive"), _store_errors("lease keepalive"):
        raise asyncio.InvalidStateError("RPC already finished.")
