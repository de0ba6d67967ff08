"""What `election-sidecar status` shows: the store's own view of an election."""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import time
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sidecar.backends import connected
from sidecar.backends.base import Candidate, SwitchoverRequest
from sidecar.config import Config


async def gather(cfg: Config) -> dict[str, Any]:
    async with connected(cfg) as backend:
        election = backend.admin(cfg.election)
        leader = await election.leader()
        candidates = await election.candidates()
        problems = await election.problems()
        request = await election.switchover_request()
    return {
        "election": cfg.election,
        "problems": problems,
        "switchover": switchover_view(request),
        "leader": None if leader is None else {"id": leader.id, "token": leader.token, "epoch": leader.epoch},
        "candidates": [
            {
                "id": c.id,
                "token": c.token,
                "key": c.key,
                "lease_ttl_remaining": c.lease_ttl_remaining,
                "leader": leader is not None and c.token == leader.token and not c.no_lead,
                # A key whose lease is gone is not a live candidate, whatever it says.
                "stale": c.stale,
                "priority": c.priority,
                "no_lead": c.no_lead,
                "foreign": c.foreign,
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
    rows = [("", "CANDIDATE", *(("KEY",) if with_key else ()), "TOKEN", "PRIORITY", "LEASE LEFT", "STATE")]
    for c in view["candidates"]:
        ttl = "n/a" if c["lease_ttl_remaining"] is None else f"{c['lease_ttl_remaining']:.0f}s"
        state = "stale" if c["stale"] else ("leader" if c["leader"] else "waiting")
        no_lead = c.get("no_lead", False)
        if no_lead and not c["stale"]:
            state = "no-lead"  # registered beside the queue: visible, never leads
        if c.get("foreign"):
            state += " (not a sidecar)"  # holds no grant, never steps aside for a switchover
        if ids.count(c["id"]) > 1:
            state += " (duplicate id)"
        key = (c["key"],) if with_key else ()
        prio = "no-lead" if no_lead else str(c.get("priority", 0))
        rows.append(("*" if c["leader"] else "", c["id"], *key, str(c["token"]), prio, ttl, state))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head, *("  ".join(col.ljust(w) for col, w in zip(r, widths, strict=True)).rstrip() for r in rows)]
    if not view["candidates"]:
        lines.append("(no candidates)")
    lines += [f"problem: {p}" for p in view.get("problems", [])]
    if view.get("switchover"):
        lines.append(render_switchover(view["switchover"]))
    return "\n".join(lines)


def switchover_view(request: SwitchoverRequest | None, now: float | None = None) -> dict[str, Any] | None:
    if request is None:
        return None
    now = time.time() if now is None else now
    return {
        "to": request.to,
        "requested_by": request.requested_by,
        "id": request.id,
        "at": request.at,
        "ttl": request.ttl,
        "pending": request.pending(now),
        "expires_in": round(request.at + request.ttl - now, 1),
    }


def render_switchover(sw: dict[str, Any]) -> str:
    to = sw["to"] or "the next candidate"
    state = f"in flight, expires in {sw['expires_in']:g}s" if sw["pending"] else "expired (the next winner clears it)"
    return f"switchover: to {to}, requested by {sw['requested_by']} (id {sw['id']}): {state}"


class SwitchoverRefused(Exception):
    """The request was not written; the message says why. Nothing changed in the store."""


@dataclass(frozen=True)
class SwitchoverResult:
    request: SwitchoverRequest
    old_leader: str
    reused: bool  # a pending request to the same target was there already (a retried command)
    new_leader: str = ""  # with --wait: who leads now
    token: int = 0
    epoch: int = 0
    seconds: float = 0.0
    done: bool = False  # with --wait: the target (or, without one, someone else) leads


def requester() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "?"
    return f"{user}@{socket.gethostname()}"


async def switchover(
    cfg: Config, to: str = "", *, ttl: float = 30.0, wait: bool = False, requested_by: str = ""
) -> SwitchoverResult:
    """Write a switchover request after checking it can succeed; with ``wait``, follow it to its end.

    Refused (SwitchoverRefused, nothing written) when there is no leader,
    the target is not a candidate, runs with --no-lead, is stale, is the leader, or its id is
    used by more than one key, another switchover is in flight, the leader is not a sidecar,
    or a candidate that is not one is queued ahead of the target.
    """
    async with connected(cfg) as backend:
        admin = backend.admin(cfg.election)
        leader = await admin.leader()
        candidates = await admin.candidates()
        if leader is None or not candidates:
            raise SwitchoverRefused(f"no leader in election {cfg.election!r}: nothing to switch over from")
        live = [c for c in candidates if c.token != leader.token and not c.no_lead]
        if to:
            mine = [c for c in candidates if c.id == to]
            if not mine:
                names = ", ".join(c.id for c in live) or "none"
                raise SwitchoverRefused(
                    f"to {to!r}: not a candidate in election {cfg.election!r} (candidates: {names})"
                )
            if len(mine) > 1:
                keys = ", ".join(c.key for c in mine)
                raise SwitchoverRefused(f"to {to!r}: the id is used by {len(mine)} keys ({keys}); ids must be unique")
            if mine[0].no_lead:
                raise SwitchoverRefused(f"to {to!r}: runs with --no-lead and never leads; choose another candidate")
            if mine[0].token == leader.token or to == leader.id:
                raise SwitchoverRefused(f"to {to!r}: already the leader")
            if mine[0].stale:
                raise SwitchoverRefused(f"to {to!r}: stale (its lease is gone); it cannot take over")
        elif not [c for c in live if not c.stale]:
            raise SwitchoverRefused("no other live candidate to take over")
        _refuse_foreign_in_the_way(candidates, leader.token, to)
        now = time.time()
        current = await admin.switchover_request()
        reused = current is not None and current.pending(now) and current.to == to
        if current is not None and current.pending(now) and not reused:
            raise SwitchoverRefused(
                f"a switchover to {current.to or 'the next candidate'!r} is in flight (id {current.id}, by "
                f"{current.requested_by}, expires in {current.at + current.ttl - now:.0f}s); wait for it or its expiry"
            )
        if reused:
            assert current is not None
            request = current
        else:
            request = SwitchoverRequest(to, requested_by or requester(), uuid.uuid4().hex[:12], now, ttl)
            await admin.request_switchover(request)
        result = SwitchoverResult(request, leader.id, reused)
        if not wait:
            return result
        return await _follow(
            admin, request, leader.token, result, foreign_leader=_foreign_successor(candidates, leader.token, to)
        )


NOT_OURS = "not a sidecar's candidacy (an `etcdctl elect` or kazoo candidate, or a sidecar too old to state its TTL)"


def _refuse_foreign_in_the_way(candidates: list[Candidate], leader_token: int, to: str) -> None:
    """Refuse what only a sidecar can do: act on the request, or step aside for it.

    The leader acts on the request and those queued ahead of the target step
    aside (docs/design.md, 1c); a candidate that is not ours does neither, so
    the request would expire unserved. Nothing is written; evicting it clears
    the way. A target that is not ours is fine: it leads once ours have
    stepped aside (with no grant: it knows none; ``_follow`` sees it lead).
    """
    queue = [c for c in candidates if not c.no_lead]
    head = next((c for c in queue if c.token == leader_token), None)
    if head is not None and head.foreign:
        raise SwitchoverRefused(f"the leader {head.id!r} is {NOT_OURS} ({head.key}): it never acts on a request")
    target = next((c for c in queue if c.id == to), None) if to else None
    if target is None:
        return  # the next in line takes over, whoever it is
    for c in queue:
        # Foreign counts stale or not: a key with no lease never goes by itself.
        if leader_token < c.token < target.token and c.foreign:
            raise SwitchoverRefused(
                f"to {to!r}: queued behind {c.id!r} ({c.key}), {NOT_OURS}, which never steps aside "
                "and would lead first; evict it or wait until it leaves"
            )


def _foreign_successor(candidates: list[Candidate], leader_token: int, to: str) -> str:
    """The id of the candidate that will take over, if it is not ours; else "".

    The target, or with none the next in line (a foreign one leads first
    whatever our priorities say: it knows none).
    """
    queue = [c for c in candidates if not c.no_lead and c.token != leader_token and (c.foreign or not c.stale)]
    if to:
        return to if any(c.foreign for c in queue if c.id == to) else ""
    after = [c for c in queue if c.token > leader_token]
    return after[0].id if after and after[0].foreign else ""


async def _follow(
    admin: Any, request: SwitchoverRequest, old_token: int, result: SwitchoverResult, *, foreign_leader: str = ""
) -> SwitchoverResult:
    """Poll until the request is settled (a new leader recorded its epoch) or expired.

    A successor that is not ours (``foreign_leader``) records no epoch and
    settles nothing: it is done when it leads (the request then expires; no
    sidecar acts on it).
    """
    start = time.monotonic()
    deadline = start + max(0.0, request.at + request.ttl - time.time()) + 1.0
    while time.monotonic() < deadline:
        lead = await admin.leader()
        current = await admin.switchover_request()
        settled = current is None or current.id != request.id
        if foreign_leader and lead is not None and lead.token != old_token and lead.id == foreign_leader:
            settled = True
        elif not lead or not lead.epoch:
            settled = False
        if settled and lead is not None and lead.token != old_token:
            ok = lead.id == request.to if request.to else True
            return SwitchoverResult(
                request, result.old_leader, result.reused, lead.id, lead.token, lead.epoch,
                time.monotonic() - start, ok,
            )  # fmt: skip
        await asyncio.sleep(0.02)
    lead = await admin.leader()
    return SwitchoverResult(
        request, result.old_leader, result.reused, lead.id if lead else "", lead.token if lead else 0,
        lead.epoch if lead else 0, time.monotonic() - start, False,
    )  # fmt: skip


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
        if candidates[0].key == target.key and not target.no_lead and not force:
            raise EvictRefused(
                f"{candidate_id!r} is the leader. Evicting it ends its lease now; its successor then waits until "
                "that lease could have expired (lock-delay) before it leads, and the evicted sidecar stops its "
                "orchestrator when it sees its key go. Pass --force to do it."
            )
        return await admin.evict(candidate_id, target.key)
