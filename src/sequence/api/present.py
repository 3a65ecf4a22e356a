"""Rendering store rows as API objects.  The allow-list here is the only way
a strategy row leaves the coordinator, so sealed columns cannot slip out."""

from __future__ import annotations

from typing import Any

from sequence.market.clock import iso as _iso


def iso(ts: float | None) -> str | None:
    """A strategy, run or key time: ISO-8601 UTC, microseconds when there are any."""
    return _iso(ts, "auto")


def strategy(row: dict[str, Any], *, waiting_reason: str | None = None) -> dict[str, Any]:
    cur = row.get("current_run")
    out = {
        "strategy_id": row["strategy_id"],
        "name": row["name"],
        "client_id": row["client_id"],
        "runtime": row["runtime"],
        "entrypoint": row["entrypoint"],
        "status": row["status"],
        "desired_state": row["desired_state"],
        "artifact_sha256": row["artifact_sha256"],
        "artifact_size": row["artifact_size"],
        "env": row["env"],
        "manifest": row["manifest"],
        "secret_names": row["secret_names"],
        "memory_mb": row["memory_mb"],
        "disk_mb": row["disk_mb"],
        "egress": row["egress"],
        "stop_timeout_s": row["stop_timeout_s"],
        "placement": row["placement"],
        "region": row["region"],
        "is_sandbox": bool(row["is_sandbox"]),
        "restart_count": row["restart_count"],
        "next_restart_at": iso(row["next_restart_at"]),
        "last_exit": row["last_exit"],
        "current_run": None,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }
    if cur:
        out["current_run"] = {
            "run_id": cur["run_id"],
            "status": cur["status"],
            "runner_id": cur["runner_id"],
            "region": cur["region"],
            "started_at": iso(cur["started_at"] or cur["claimed_at"]),
        }
    if waiting_reason:
        out["waiting_reason"] = waiting_reason
    return out


def run(row: dict[str, Any]) -> dict[str, Any]:
    start = row.get("started_at") or row.get("claimed_at")
    end = row.get("ended_at")
    return {
        "run_id": row["run_id"],
        "strategy_id": row["strategy_id"],
        "epoch": row["epoch"],
        "status": row["status"],
        "runner_id": row["runner_id"],
        "region": row["region"],
        "artifact_sha256": row["artifact_sha256"],
        "claimed_at": iso(row["claimed_at"]),
        "started_at": iso(row.get("started_at")),
        "ended_at": iso(end),
        "duration_s": round(end - start, 3) if end and start else None,
        "exit": {"code": row["exit_code"], "signal": row["exit_signal"], "oom": bool(row["oom"]),
                 "reason": row["reason"]} if end else None,
        "peak_rss_bytes": row["peak_rss_bytes"],
        "cpu_seconds": row["cpu_seconds"],
        "log_lines": row["log_lines"],
        "dropped_lines": row["dropped_lines"],
    }


def log_line(r: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": r["seq"], "ts": r["ts"], "stream": r["stream"], "line": r["line"]}
    if r.get("partial"):
        out["partial"] = True
    if run_id is not None:
        out["run_id"] = run_id
    return out


def api_key(r: dict[str, Any]) -> dict[str, Any]:
    return {"key_id": r["key_id"], "prefix": r["prefix"], "mode": r["mode"], "name": r["name"],
            "created_at": iso(r["created_at"]), "revoked_at": iso(r.get("revoked_at")),
            "last_used_at": iso(r.get("last_used_at"))}
