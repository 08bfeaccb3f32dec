"""Show a plan and its outcome: a table a person reads at a glance, or JSON for machines."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from cleaner.planner import DELETE, KEEP, PENDING, Decision
from cleaner.prune import Report

_MAX_TAGS = 40


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{size} B"


def plural(count: int, noun: str, nouns: str | None = None) -> str:
    """``1 image``, ``2 images``; ``nouns`` for irregular plurals (repository, repositories)."""
    return f"{count} {noun if count == 1 else nouns or noun + 's'}"


def age(uploaded_ms: int | None, now_ms: int) -> str:
    if uploaded_ms is None:
        return "unknown"
    seconds = max(0, now_ms - uploaded_ms) // 1000
    if seconds < 60:
        return f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h ago"
    return f"{seconds // 86400}d ago"


def _tags(decision: Decision) -> str:
    text = ", ".join(decision.tags) or "-"
    return text if len(text) <= _MAX_TAGS else text[: _MAX_TAGS - 1] + "…"


def _name(decision: Decision) -> str:
    short = decision.digest.split(":", 1)[-1][:12]
    if decision.role == "child":
        return f"  └ {short}"
    if decision.role == "artifact" and decision.owner:
        return f"  ◦ {short}"
    return short


def table(report: Report) -> str:
    plan = report.plan
    rows = [("IMAGE", "TAGS", "UPLOADED", "SIZE", "DECISION", "REASON")]
    for d in plan.decisions:
        role = "" if d.role == "image" else f" ({d.role})"
        size = human_bytes(d.size) if d.role != "child" or d.size else "-"
        rows.append(
            (_name(d), _tags(d), age(d.uploaded_ms, plan.now_ms), size, d.action + role, d.reason)
        )
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = [f"{report.repository}  (rule {plan.rule.repository}: {plan.rule.describe()})", ""]
    for row in rows:
        lines.append(
            "  ".join(c.ljust(w) for c, w in zip(row[:5], widths, strict=True)) + "  " + row[5]
        )
    for tag in plan.dangling_tags:
        lines.append(f"dangling tag {tag!r}: listed, but reading it finds nothing; not counted")
    lines += ["", summary_line(report)]
    if report.outcome is not None:
        lines += outcome_lines(report)
    return "\n".join(lines)


def summary_line(report: Report) -> str:
    plan = report.plan
    deleted, pending = plan.count(DELETE), plan.count(PENDING)
    text = (
        f"Plan: {plural(plan.images, 'image')}; keep {plan.count(KEEP)}, delete {deleted}"
        f" ({human_bytes(plan.reclaimable_bytes)})"
    )
    if pending:
        text += f", {pending} pending"
    if report.dry_run:
        text += ". Dry run: nothing was changed."
    return text


def outcome_lines(report: Report) -> list[str]:
    out = report.outcome
    lines = [
        f"Done: {plural(len(out.deleted), 'manifest')} deleted, "
        f"{plural(len(out.tags_removed), 'tag')} removed, "
        f"{human_bytes(out.bytes_reclaimed)} reclaimed; {len(out.gone)} already gone, "
        f"{len(out.failed)} failed."
    ]
    lines += [f"  tag {tag}: {why}" for tag, why in out.tags_left]
    lines += [f"  kept {digest[:19]}: {why}" for digest, why in out.kept]
    lines += [f"  FAILED {what}: {why}" for what, why in out.failed]
    lines += [f"  pending {digest[:19]}: {why}" for digest, why in out.pending]
    if out.stopped:
        lines.append(f"  stopped: {out.stopped}")
    return lines


def as_dict(report: Report) -> dict:
    plan, out = report.plan, report.outcome
    data: dict = {
        "repository": str(report.repository),
        "rule": {"repository": report.rule.repository, "policy": report.rule.describe()},
        "dry_run": report.dry_run,
        "trigger": report.trigger,
        "ok": report.ok,
        "error": report.error,
        "duration_s": round(report.duration_s, 3),
        "requests": report.requests,
    }
    if plan is not None:
        data["plan"] = [_decision(d, plan.now_ms) for d in plan.decisions]
        data["dangling_tags"] = plan.dangling_tags
        data["summary"] = {
            "images": plan.images,
            "keep": plan.count(KEEP),
            "delete": plan.count(DELETE),
            "pending": plan.count(PENDING),
            "bytes": plan.reclaimable_bytes,
        }
    if out is not None:
        data["outcome"] = {
            "deleted": out.deleted,
            "already_gone": out.gone,
            "tags_removed": out.tags_removed,
            "tags_left": [{"tag": t, "why": w} for t, w in out.tags_left],
            "kept": [{"digest": d, "why": w} for d, w in out.kept],
            "failed": [{"what": d, "why": w} for d, w in out.failed],
            "pending": [{"digest": d, "why": w} for d, w in out.pending],
            "bytes_reclaimed": out.bytes_reclaimed,
            "stopped": out.stopped,
        }
    return data


def _decision(d: Decision, now_ms: int) -> dict:
    uploaded = (
        None
        if d.uploaded_ms is None
        else datetime.fromtimestamp(d.uploaded_ms / 1000, UTC).isoformat()
    )
    return {
        "digest": d.digest,
        "role": d.role,
        "tags": list(d.tags),
        "uploaded": uploaded,
        "age_s": None if d.uploaded_ms is None else max(0, now_ms - d.uploaded_ms) // 1000,
        "size": d.size,
        "decision": d.action,
        "reason": d.reason,
        "owner": d.owner,
    }


def to_json(report: Report) -> str:
    return json.dumps(as_dict(report), indent=2)


def failure_json(repository, rule, dry_run: bool, error: Exception) -> str:
    """What ``prune --json`` prints when the run stopped before a report (listing, auth)."""
    data = {
        "repository": str(repository),
        "rule": {"repository": rule.repository, "policy": rule.describe()},
        "dry_run": dry_run,
        "ok": False,
        "error": str(error),
    }
    return json.dumps(data, indent=2)
