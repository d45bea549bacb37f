"""What the audit reports: one row per audited step (asset and partition) and the whole report, as a table
for people or JSON."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StepAudit:
    asset: str
    partition: str | None
    dagster_run_id: str | None = None
    materialized_at: str | None = None
    code_version: str | None = None
    data_version: str | None = None
    recomputed_version: str | None = None
    mlflow_run_id: str | None = None
    rows: int | None = None
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.asset}[{self.partition}]" if self.partition else self.asset

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class AuditReport:
    home: str
    partitions: list[str]
    """The partition keys audited (of every partitioned asset)."""
    steps: list[StepAudit] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    """Problems not tied to one step (no home, no checkpoint at all)."""
    warnings: list[str] = field(default_factory=list)
    """Warnings not tied to one step (an asset this home never ran)."""

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.steps)

    def all_problems(self) -> list[str]:
        return self.problems + [f"{s.label}: {p}" for s in self.steps for p in s.problems]

    def all_warnings(self) -> list[str]:
        return self.warnings + [f"{s.label}: {w}" for s in self.steps for w in s.warnings]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "home": self.home,
            "partitions": self.partitions,
            "steps": [asdict(s) | {"ok": s.ok} for s in self.steps],
            "problems": self.all_problems(),
            "warnings": self.all_warnings(),
        }

    def format_table(self) -> str:
        header = (
            "step",
            "dagster run",
            "materialized (UTC)",
            "code",
            "data version",
            "recomputed",
            "mlflow run",
            "rows",
            "status",
        )
        body = [
            (
                s.label,
                (s.dagster_run_id or "-")[:8],
                s.materialized_at or "-",
                s.code_version or "-",
                s.data_version or "-",
                s.recomputed_version or "-",
                (s.mlflow_run_id or "-")[:8],
                "-" if s.rows is None else str(s.rows),
                "FAIL" if s.problems else ("stale" if s.warnings else "ok"),
            )
            for s in self.steps
        ]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        lines = [
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in [header, *body]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        out = [f"audit of {self.home} (partitions: {', '.join(self.partitions) or 'none'})", "", *lines, ""]
        out += [f"PROBLEM  {p}" for p in self.all_problems()]
        out += [f"warning  {w}" for w in self.all_warnings()]
        out.append("audit passed" if self.ok else f"audit FAILED: {len(self.all_problems())} problem(s)")
        return "\n".join(out)


# ---------------------------------------------------------------------------------------------- walk
