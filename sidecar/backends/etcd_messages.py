"""etcd's rpc.proto messages, as etcd3aio (pinned) generated them, without importing etcd3aio.

etcd3aio's package imports grpc, which the sidecar no longer loads (see
etcd_wire.py); its generated files import each other by top-level names
(``etcd.api...``, ``google.api...``), so their directory goes on sys.path,
as etcd3aio's own ``_protobuf`` does. bench/transport_floor.py loads the
same messages for both of its clients.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any


def load() -> Any:
    """etcd's rpc.proto messages, as etcd3aio generated them, without etcd3aio's package."""
    spec = importlib.util.find_spec("etcd3aio")
    if spec is None or spec.origin is None:
        raise ImportError("etcd3aio is not installed: its generated etcd messages are needed")
    proto = str(Path(spec.origin).parent / "proto")
    if proto not in sys.path:
        sys.path.append(proto)  # etcd3aio's own _protobuf does the same: the files import each other by these names
    # rpc.proto's imports must be in the descriptor pool before it.
    for dep in (
        "google.api.annotations_pb2",
        "protoc_gen_openapiv2.options.annotations_pb2",
        "etcd.api.mvccpb.kv_pb2",
        "etcd.api.authpb.auth_pb2",
        "etcd.api.versionpb.version_pb2",
    ):
        importlib.import_module(dep)
    return importlib.import_module("etcd.api.etcdserverpb.rpc_pb2")


pb = load()
