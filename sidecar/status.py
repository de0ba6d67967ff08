"""What `election-sidecar status` shows: the store's own view of an election."""

from __future__ import annotations

from typing import Any

from sidecar.backends import connect
from sidecar.clock import MonotonicClock
from sidecar.config import Config


async def gather(cfg: Config) -> dict[str, Any]:
    backend = await connect(cfg, MonotonicClock())
    try:
        election = backend.election(cfg.election)
        leader = await election.leader()
        candidates = await election.candidates()
    finally:
        await backend.close()
    return {
        "election": cfg.election,
        "leader": None if leader is None else {"id": leader.id, "token": leader.token, "epoch": leader.epoch},
        "candidates": [
            {
                "id": c.id,
                "token": c.token,
                "key": c.key,
                "lease_ttl_remaining": c.lease_ttl_remaining,
                "leader": leader is not None and c.token == leader.token,
                # A key whose lease is gone is not a live candidate, whatever it says.
                "stale": c.stale,
            }
            for c in candidates
        ],
    }


def render_table(view: dict[str, Any]) -> str:
    lead = view["leader"]
    head = f"election {view['election']}: "
    if lead is None:
        head += "no leader"
    else:
        epoch = lead["epoch"] if lead["epoch"] else "pending"
        head += f"leader {lead['id']}  token {lead['token']}  epoch {epoch}"
    rows = [("", "CANDIDATE", "TOKEN", "LEASE LEFT", "STATE")]
    for c in view["candidates"]:
        ttl = "n/a" if c["lease_ttl_remaining"] is None else f"{c['lease_ttl_remaining']:.0f}s"
        state = "stale" if c["stale"] else ("leader" if c["leader"] else "waiting")
        rows.append(("*" if c["leader"] else "", c["id"], str(c["token"]), ttl, state))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [head, *("  ".join(col.ljust(w) for col, w in zip(r, widths, strict=True)).rstrip() for r in rows)]
    if not view["candidates"]:
        lines.append("(no candidates)")
    return "\n".join(lines)
