"""Every transport failure of an etcd call is StoreUnavailable, never a crash of the lease;
a refusal of our credentials is StoreForbidden; a write on a lease the store ended is SessionExpired."""

from __future__ import annotations

import pytest

from sidecar.backends.base import SessionExpired, StoreForbidden, StoreUnavailable
from sidecar.backends.etcd import _store_errors
from sidecar.backends.etcd_wire import RpcError, TransportError


@pytest.mark.parametrize(
    "exc",
    [
        TransportError("127.0.0.1:2379: StreamTerminatedError Connection lost"),
        TimeoutError(),
        ConnectionResetError("reset by peer"),
        RpcError("UNAVAILABLE", "etcdserver: no leader"),
        RpcError("DEADLINE_EXCEEDED", ""),
        RpcError("INTERNAL", "whatever a member says"),
        # A member that no longer knows our token (expired there, or it restarted): log in again.
        RpcError("UNAUTHENTICATED", "etcdserver: invalid auth token"),
    ],
)
def test_a_failure_below_the_store_is_an_outage(exc: Exception) -> None:
    with pytest.raises(StoreUnavailable, match="lease keepalive"), _store_errors("lease keepalive"):
        raise exc


@pytest.mark.parametrize(
    ("exc", "says"),
    [
        (RpcError("UNAUTHENTICATED", "etcdserver: user name not found"), "user name not found"),
        (RpcError("PERMISSION_DENIED", "etcdserver: permission denied"), "permission denied"),
        (RpcError("INVALID_ARGUMENT", "etcdserver: user name is empty"), "set --etcd-user"),
        (RpcError("INVALID_ARGUMENT", "etcdserver: authentication failed, invalid user ID or password"), "wrong user"),
    ],
)
def test_a_refusal_of_our_credentials_is_forbidden(exc: Exception, says: str) -> None:
    with pytest.raises(StoreForbidden, match=says), _store_errors("lease grant"):
        raise exc


def test_a_write_on_a_lease_the_store_ended_ends_the_session() -> None:
    with pytest.raises(SessionExpired, match="our lease is gone"), _store_errors("campaign"):
        raise RpcError("NOT_FOUND", "etcdserver: requested lease not found")
