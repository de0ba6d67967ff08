"""What `election-sidecar status` shows: the store's own view of an election."""

from __future__ import annotations

import json
import urllib.request
from datetime import UTC, datetime
from typing import Any

from sidecar.backends import connected
from sidecar.config import Config


async def gather(cfg: Config) -> dict[str, Any]:
    async with connected(cfg) as backend:
        election = backend.admin(cfg.election)
        leader = await election.leader()
        candidates = await election.candidates()
        problems = await election.problems()
    return {
        "election": cfg.election,
        "problems": problems,
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


def fetch_leader_view(url: str, timeout: float = 2.0) -> dict[str, Any]:
    """A sidecar's /leader, or {"error": ...} if it does not answer."""
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/leader", timeout=timeout) as resp:
            out: dict[str, Any] = json.loads(resp.read())
            return out
    except (OSError, ValueError) as exc:
        return {"error": str(exc)}


def cross_check(view: dict[str, Any], sidecars: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compare each sidecar's own view with the store's; mark disagreement.

    ``sidecars`` holds {"url", ...fetch_leader_view()} per sidecar. A sidecar
    that says it leads while the store names another leader (or token) is a
    disagreement; a follower whose idea of the leader is old is only stale.
    """
    store = view["leader"]
    rows = []
    for sc in sidecars:
        row: dict[str, Any] = {"url": sc["url"], "candidate": sc.get("candidate"), "state": sc.get("state")}
        if "error" in sc:
            row.update(agrees=None, verdict="unreachable", detail=sc["error"])
        else:
            believed = sc.get("leader")
            same = (
                store is not None
                and believed is not None
                and believed["id"] == store["id"]
                and believed["token"] == store["token"]
            )
            if sc.get("state") == "leader":
                row.update(agrees=same, verdict="agrees" if same else "DISAGREES")
            elif believed is None or same:
                row.update(agrees=True, verdict="agrees")
            else:
                row.update(agrees=True, verdict="stale view")
            row["believes"] = believed
        rows.append(row)
    return rows


def render_cross_check(rows: list[dict[str, Any]]) -> str:
    lines = ["", "SIDECAR VIEWS"]
    for r in rows:
        b = r.get("believes") or {}
        believed = f"leader {b.get('id')} token {b.get('token')}" if b else "no leader known"
        who, state = r.get("candidate") or "?", r.get("state") or "-"
        lines.append(f"  {r['url']:<28} {who:<16} {state:<10} {believed:<28} {r['verdict']}")
    return "\n".join(lines)


def render_table(view: dict[str, Any]) -> str:
    lead = view["leader"]
    head = f"election {view['election']}: "
    if lead is None:
        head += "no leader"
    else:
        epoch = lead["epoch"] if lead["epoch"] else "pending"
        head += f"leader {lead['id']}  token {lead['token']}  epoch {epoch}"
    ids = [c["id"] for c in view["candidates"]]
    # Two sidecars with one id are told apart only by their keys: show them then.
    with_key = len(set(ids)) < len(ids)
    rows = [("", "CANDIDATE", *(("KEY",) if with_key else ()), "TOKEN", "LEASE LEFT", "STATE")]
    for c in view["candidates"]:
        ttl = "n/a" if c["lease_ttl_remaining"] is None else f"{c['lease_ttl_remaining']:.0f}s"
        state = "stale" if c["stale"] else ("leader" if c["leader"] else "waiting")
        if ids.count(c["id"]) > 1:
            state += " (duplicate id)"
        key = (c["key"],) if with_key else ()
        rows.append(("*" if c["leader"] else "", c["id"], *key, str(c["token"]), ttl, state))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head, *("  ".join(col.ljust(w) for col, w in zip(r, widths, strict=True)).rstrip() for r in rows)]
    if not view["candidates"]:
        lines.append("(no candidates)")
    lines += [f"problem: {p}" for p in view.get("problems", [])]
    return "\n".join(lines)


async def watch_leader(cfg: Config, json_lines: bool = False) -> None:
    """One line per leader change (a leader whose epoch is not yet recorded is skipped)."""
    async with connected(cfg) as backend:
        async for lead in backend.admin(cfg.election).observe():
            if lead is not None and not lead.epoch:
                continue  # the new leader records its term a moment later
            now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
            rec: dict[str, Any] = {"time": now, "election": cfg.election, "leader": None}
            if lead is not None:
                rec["leader"] = {"id": lead.id, "token": lead.token, "epoch": lead.epoch}
            if json_lines:
                print(json.dumps(rec), flush=True)
            elif lead is None:
                print(f"{now}  {cfg.election}: no leader", flush=True)
            else:
                print(f"{now}  {cfg.election}: leader {lead.id}  token {lead.token}  epoch {lead.epoch}", flush=True)


class EvictRefused(Exception):
    """The eviction was not done; the message says why and what to pass."""


async def evict(cfg: Config, candidate_id: str, *, key: str = "", force: bool = False) -> list[str]:
    """Evict one candidacy; refuse an ambiguous id, and the leader without ``force``."""
    async with connected(cfg) as backend:
        admin = backend.admin(cfg.election)
        candidates = await admin.candidates()
        mine = [c for c in candidates if c.id == candidate_id and (not key or c.key == key)]
        if not mine:
            return []
        if len(mine) > 1:
            keys = ", ".join(c.key for c in mine)
            raise EvictRefused(
                f"candidate id {candidate_id!r} is used by {len(mine)} keys ({keys}); pass --key to choose one"
            )
        target = mine[0]
        if candidates[0].key == target.key and not force:
            raise EvictRefused(
                f"{candidate_id!r} is the leader. Evicting it ends its lease now; its successor then waits until "
                "that lease could have expired (lock-delay) before it leads, and the evicted sidecar stops its "
                "orchestrator when it sees its key go. Pass --force to do it."
            )
        return await admin.evict(candidate_id, target.key)
