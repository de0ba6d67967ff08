"""The test and demo wing: local stores, fleets of sidecars, faults, the toy
orchestrator and the checker. The runtime (``sidecar``) never imports it;
it adds the ``demo`` and ``validate`` commands through an entry point, and
the in-memory store for tests through the backend registry."""

from sidecar import backends

backends.register("memory", "sidecar_harness.memory")
