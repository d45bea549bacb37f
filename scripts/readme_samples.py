"""The docs' samples, produced from a real run's home: the results tables of README's "What the default run
shows" and the two audit samples of docs/operations.md (a clean home; a copy of it with one warehouse row and
one checkpoint file changed).

    python scripts/readme_samples.py --home .real_assets                 # print the samples
    python scripts/readme_samples.py --home .real_assets --write README.md docs/operations.md

Each sample sits between `<!-- sample:NAME -->` and `<!-- /sample:NAME -->` in one of `SAMPLE_FILES`;
tests/test_readme_samples.py checks that the docs' samples have the form this script gives the shared demo
home (`sample_form`: the same lines, steps, columns and layout, with ids, times, versions and numbers
left out), so they cannot drift from the code.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb

SAMPLES = ("results", "budget-sweep", "audit-clean", "audit-tampered")
SAMPLE_FILES = ("README.md", "docs/operations.md")
"""Where the samples are, relative to the repository root."""
TAMPERED_CHECKPOINT = ("dpo_checkpoint", "0|easy")
"""The checkpoint whose file the tampered sample changes: the first seed of REAL's own strategy."""


def _warehouse(home: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)


def results(home: Path) -> str:
    """The strategy comparison as the Dagster UI shows it (`core.report.display_table`), with the size of
    the run it comes from."""
    from real_assets.core.report import display_table, markdown_table

    with _warehouse(home) as con:
        table = con.execute("select * from eval.strategy_comparison").df()
        diffs = con.execute("select * from eval.strategy_differences").df()
        prompts = dict(con.execute("select split, count(*) from raw.prompts group by split").fetchall())
        eval_pairs, comparisons = con.execute(
            "select max(eval_pairs), max(win_comparisons) from eval.eval_scores"
        ).fetchone()
    seeds = int(table["seeds"].max())
    caption = (
        f"{sum(prompts.values())} prompts ({prompts.get('train', 0)} train, "
        f"{prompts.get('test', 0)} held out, "
        f"giving {eval_pairs} gold-directed pairs for preference accuracy and {comparisons} sampled "
        f"comparisons per seed for the win rate), {seeds} seeds. Mean over the seeds [95% two-way bootstrap "
        "interval over seeds and prompts]; the last columns are the paired difference against `random` [95% "
        "two-way bootstrap over seeds and held-out prompts] and its p-value:"
    )
    return f"{caption}\n\n{markdown_table(display_table(table, diffs))}"


def budget_sweep(home: Path) -> str:
    """The budget sweep of the first seed: pairs, label error and accuracy per keep fraction and strategy."""
    with _warehouse(home) as con:
        sweep = con.execute(
            "select * from eval.budget_sweep where seed = (select min(seed) from eval.budget_sweep) "
            "order by keep_fraction, strategy"
        ).df()
    strategies = sorted(set(sweep["strategy"]))
    header = ["keep fraction", "pairs"]
    header += [f"{s}: {what}" for s in strategies for what in ("label error", "accuracy")]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for fraction, rows in sweep.groupby("keep_fraction", sort=True):
        by_strategy = rows.set_index("strategy")
        cells = [f"{fraction:.2f}", f"{int(rows['pairs'].max()):,}"]
        for s in strategies:
            row = by_strategy.loc[s] if s in by_strategy.index else None
            if row is None:
                cells += ["", ""]
            else:
                cells += [f"{row.label_error_rate:.3f}", f"{row.preference_accuracy:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _audit_text(home: Path, keep) -> str:
    """`real-assets audit`'s table of a home, with only the steps `keep` accepts (every problem stays)."""
    from real_assets.audit import audit
    from real_assets.definitions import definitions
    from real_assets.settings import Locations

    report = audit(definitions(Locations.resolve(home)))
    report.steps = [s for s in report.steps if keep(s)]
    return report.format_table().replace(str(home.resolve()), ".real_assets")


def _first_partition(step) -> bool:
    return step.partition is None or step.partition == TAMPERED_CHECKPOINT[1]


def audit_clean(home: Path) -> str:
    """The audit of the home: every unpartitioned step and the first partition of each partitioned one."""
    return _audit_text(home, _first_partition)


@contextlib.contextmanager
def _tampered_copy(home: Path) -> Iterator[Path]:
    """A copy of the home with one `raw.responses` score and one byte of a checkpoint file changed."""
    from real_assets.homes import copy_home

    with tempfile.TemporaryDirectory(prefix="readme_samples_") as tmp:
        copy = copy_home(home, Path(tmp) / "home")
        with duckdb.connect(str(copy / "warehouse.duckdb")) as con:
            con.execute(
                "update raw.responses set score = score + 1 "
                "where rowid = (select min(rowid) from raw.responses)"
            )
            paths = con.execute(
                "select path from models.checkpoints where asset = ? and partition = ?",
                list(TAMPERED_CHECKPOINT),
            ).fetchall()
        for (path,) in paths:
            with (Path(path) / "model.safetensors").open("ab") as weights:
                weights.write(b"\0")
        yield copy


def audit_tampered(home: Path) -> str:
    """The audit of a tampered copy of the home: the steps that fail, their problems, the verdict."""
    with _tampered_copy(home) as copy:
        return _audit_text(copy, lambda step: bool(step.problems))


def render(home: Path) -> dict[str, str]:
    """Every sample of README, by name, from one home."""
    home = Path(home).resolve()
    return {
        "results": results(home),
        "budget-sweep": budget_sweep(home),
        "audit-clean": f"```\n{audit_clean(home)}\n```",
        "audit-tampered": f"```\n{audit_tampered(home)}\n```",
    }


def _block(name: str) -> re.Pattern:
    return re.compile(rf"(<!-- sample:{name} -->\n)(.*?)(\n<!-- /sample:{name} -->)", re.DOTALL)


def readme_samples(readme: str) -> dict[str, str]:
    """The samples in README's text, by name (a missing block raises)."""
    found = {}
    for name in SAMPLES:
        match = _block(name).search(readme)
        if match is None:
            raise ValueError(f"README has no <!-- sample:{name} --> ... <!-- /sample:{name} --> block")
        found[name] = match.group(2)
    return found


def write_samples(readme: str, samples: dict[str, str]) -> str:
    """README's text with each sample block replaced."""
    for name, text in samples.items():
        readme = _block(name).sub(lambda m, text=text: m.group(1) + text + m.group(3), readme)
    return readme


_VOLATILE = [
    (re.compile(r" \(all ties\)"), ""),  # whether a judge told the policies apart depends on the run
    (re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\b"), "<time>"),
    (re.compile(r"\b[0-9a-f]{8,}\b"), "<hex>"),
    (re.compile(r"p[<=]\d+(\.\d+)?"), "p=<n>"),
    (re.compile(r"[+-]?\d[\d,]*(\.\d+)?"), "<n>"),
    (re.compile(r"-{2,}"), "--"),
    (re.compile(r"[ \t]+"), " "),
]


def sample_form(text: str) -> str:
    """A sample without what differs from run to run (times, ids and versions, numbers) nor the column
    widths (padding, rules): what two runs of the same code share."""
    for pattern, placeholder in _VOLATILE:
        text = pattern.sub(placeholder, text)
    return "\n".join(line.rstrip() for line in text.splitlines())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", required=True, help="a home a demo ran in (e.g. .real_assets)")
    parser.add_argument(
        "--write",
        type=Path,
        nargs="+",
        help=f"replace the samples in these files ({', '.join(SAMPLE_FILES)} hold them)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    samples = render(Path(args.home))
    for path in args.write or []:
        path.write_text(write_samples(path.read_text(), samples))
        print(f"wrote the samples {path} holds into it")
    if not args.write:
        for name, text in samples.items():
            print(f"<!-- sample:{name} -->\n{text}\n<!-- /sample:{name} -->\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
