#!/usr/bin/env python3
"""Regenerates the figure tables of benches/README.md from benches/results/*.txt.

scripts/bench.sh writes one results file per section (`name=value` lines: the command, date,
commit and machine, then the figures). Each table in benches/README.md sits between
`<!-- BEGIN generated: NAME -->` and `<!-- END generated: NAME -->`; this script rewrites what is
between them and leaves the prose around them alone. A section never measured says so, with the
command that would measure it.

    python3 scripts/bench_readme.py [--check]

--check exits 1 if the README is not what the results files give (nothing is written).
"""

import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benches" / "results"
README = ROOT / "benches" / "README.md"


def load(section):
    path = RESULTS / f"{section}.txt"
    if not path.exists():
        return None
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def num(value, digits=3):
    return f"{float(value):.{digits}f}"


def provenance(r):
    return f"`{r['command']}` — {r['date']}, commit {r['commit']}."


def missing(section):
    return f"Not measured yet: run `scripts/bench.sh {section}`."


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def machine():
    results = [r for r in (load(s) for s in ("postgres", "mysql", "sqlite", "forecast", "pipeline", "micro", "memory",
                                             "soak", "cdc", "migrate")) if r]
    if not results:
        return "No results recorded yet."
    r = max(results, key=lambda r: r["date"])
    return (
        f"{r['machine_cpu']}, {r['machine_cores']} cores, {r['machine_memory_gib']} GiB; {r['machine_os']}; "
        f"{r['machine_rustc']}; PostgreSQL {r['machine_postgres']}; MariaDB {r['machine_mariadb']} "
        f"(as recorded by the latest section, {r['date']}; each table names its own run)."
    )


def end_to_end():
    # (section, prefix, pair, raw limit, goal without verification, goal verified)
    pairs = [
        ("postgres", "pg_to_pg", "PostgreSQL → PostgreSQL", "binary `COPY TO STDOUT | COPY FROM STDIN`", "≤ 1.05", "≤ 1.5"),
        ("mysql", "my_to_pg", "MariaDB → PostgreSQL", "`mariadb --quick -B | COPY FROM STDIN`", "≤ 1.0", ""),
        ("mysql", "pg_to_my", "PostgreSQL → MariaDB", "`COPY TO STDOUT | LOAD DATA LOCAL INFILE`", "≤ 1.1", ""),
        ("sqlite", "sqlite", "SQLite → SQLite", "SQLite's own `INSERT … SELECT`", "", ""),
    ]
    rows, sources = [], []
    for section, p, pair, raw, goal, goal_v in pairs:
        r = load(section)
        if r is None or f"{p}_raw_seconds" not in r:
            rows.append([pair, raw, "–", "–", "–", "–", goal, "–", "–", goal_v, "–"])
            sources.append(f"{pair}: " + missing(section))
            continue
        count = r.get(f"{section}_rows", r.get("mysql_rows", "?"))
        rows.append([
            pair,
            raw,
            f"{int(count):,}",
            num(r[f"{p}_raw_seconds"]),
            num(r[f"{p}_barge_no_verify_seconds"]),
            f"**{r[f'{p}_ratio']}**",
            goal,
            num(r[f"{p}_barge_verified_seconds"]),
            f"**{r[f'{p}_verified_ratio']}**",
            goal_v,
            r[f"{p}_peak_rss_mb"],
        ])
        if provenance(r) not in sources:
            sources.append(provenance(r))
    out = table(
        ["pair", "raw limit", "rows", "raw s", "barge --no-verify s", "ratio", "goal", "barge verified s", "ratio",
         "goal", "peak RSS MB"],
        rows,
    )
    return out + "\n\nMedians of three alternating rounds. " + " ".join(sources)


def peers():
    r = load("mysql")
    if r is None:
        return missing("mysql")
    rows = []
    if "pgloader_seconds" in r:
        rows.append([
            f"pgloader, MariaDB → PostgreSQL ({r['pgloader_peak_rss_mb']} MB RSS)",
            num(r["pgloader_seconds"]),
            num(r["my_to_pg_barge_no_verify_seconds"]),
            f"**{r['my_to_pg_ratio_vs_pgloader']}**",
            "≤ 0.4",
        ])
    for case, label in (("identical", "identical tables"), ("changed_10", "10 rows changed on one side")):
        if f"verify_{case}_reladiff_seconds" in r:
            ratio = float(r[f"verify_{case}_barge_seconds"]) / float(r[f"verify_{case}_reladiff_seconds"])
            rows.append([
                f"reladiff vs `barge verify`, MariaDB vs PostgreSQL, {label}",
                num(r[f"verify_{case}_reladiff_seconds"]),
                num(r[f"verify_{case}_barge_seconds"]),
                f"**{ratio:.2f}**",
                "≤ 0.6",
            ])
    if not rows:
        return "pgloader and reladiff did not run (not installed, or failed) when `scripts/bench.sh mysql` last ran."
    return table(["peer", "peer s", "barge s", "ratio", "goal"], rows) + "\n\n" + provenance(r)


def pipeline():
    r = load("pipeline")
    if r is None:
        return missing("pipeline")
    rows = [
        ["`barge copy`", num(r["pipeline_copy_verified_seconds"]), "1.00"],
        ["`barge run`, four computed columns", num(r["pipeline_transforms_verified_seconds"]),
         r["pipeline_transforms_ratio_to_copy"]],
        ["`barge run`, error budget (savepoints)", num(r["pipeline_error_budget_verified_seconds"]),
         r["pipeline_error_budget_ratio_to_copy"]],
    ]
    return (table(["PostgreSQL → PostgreSQL, verified", "seconds", "ratio to `barge copy`"], rows)
            + f"\n\n{int(r['pipeline_rows']):,} rows; peak RSS {r['pipeline_peak_rss_mb']} MB. " + provenance(r))


def forecast():
    r = load("forecast")
    if r is None:
        return missing("forecast")
    pairs = [
        ("sqlite_to_sqlite", "SQLite → SQLite"),
        ("pg_to_pg", "PostgreSQL → PostgreSQL, `sslmode=disable`"),
        ("pg_to_pg_tls", "PostgreSQL → PostgreSQL, TLS (`sslmode=prefer`, the default)"),
        ("my_to_pg", "MariaDB → PostgreSQL"),
        ("pg_to_my", "PostgreSQL → MariaDB"),
        ("my_to_my", "MariaDB → MariaDB"),
    ]
    rows = []
    for p, pair in pairs:
        if f"{p}_forecast_seconds" not in r:
            rows.append([pair, "–", "–", "–", "±20%"])
            continue
        error = r[f"{p}_forecast_error"]
        met = abs(float(error.rstrip("%"))) <= 20
        rows.append([
            pair,
            f"{num(r[f'{p}_forecast_seconds'], 2)} s ({r[f'{p}_forecast_workers']} worker(s))",
            f"{num(r[f'{p}_measured_seconds'], 2)} s",
            f"**{error}**" + ("" if met else " (missed)"),
            "±20%",
        ])
    return (table(["pair", "forecast", "measured", "error", "goal"], rows)
            + f"\n\n{int(r['forecast_rows']):,} rows. " + provenance(r))


MICRO = [
    ("postgres_encode_binary_copy", "PostgreSQL: Arrow batch → binary COPY payload", "rows"),
    ("postgres_decode_binary_copy", "PostgreSQL: binary COPY payload → Arrow batch", "rows"),
    ("mysql_decode_text", "MySQL: text-protocol values → Arrow batch", "rows"),
    ("mysql_encode_load_data", "MySQL: Arrow batch → LOAD DATA text", "rows"),
    ("verify_canonical_blake3", "canonical encoding + blake3 per row, range digest", "rows"),
    ("plan_quantile_bounds", "partition bounds from 16,384 sampled composite keys (64 ranges)", "keys"),
    ("plan_integer_bounds", "partition bounds by arithmetic (64 ranges)", "ranges"),
]


def micro():
    r = load("micro")
    if r is None:
        return missing("micro")
    rows = []
    for name, what, unit in MICRO:
        if f"micro_{name}_ns" not in r:
            continue
        ns = float(r[f"micro_{name}_ns"])
        time = f"{ns / 1e6:.3f} ms" if ns >= 1e5 else f"{ns / 1e3:.2f} µs" if ns >= 1e3 else f"{ns:.0f} ns"
        per_s = float(r[f"micro_{name}_per_s"])
        rate = f"{per_s / 1e9:.2f} G" if per_s >= 1e9 else f"{per_s / 1e6:.2f} M"
        rows.append([f"`{name.replace('_', '/', 1)}`", what, f"{int(r[f'micro_{name}_elements']):,} {unit}", time,
                     f"{rate} {unit}/s"])
    return (table(["benchmark", "what", "per iteration", "median time", "throughput"], rows)
            + "\n\nOne core, criterion medians. " + provenance(r))


def memory():
    r = load("memory")
    if not r:
        return missing("memory")
    rows = []
    for name, what in (("wide", "10 KB texts"), ("large", "50 MB bytea values")):
        peak = int(r[f"memory_{name}_peak_rss_mb"])
        rows.append([f"{int(r[f'memory_{name}_rows']):,} rows of {what}", num(r[f"memory_{name}_seconds"]),
                     f"**{peak}**", "≤ 150", "met" if peak <= 150 else "not met"])
    return (table(["table (PostgreSQL → PostgreSQL, verified, default batch sizes)", "seconds", "peak RSS MB",
                   "goal", ""], rows) + "\n\n" + provenance(r))


def soak():
    r = load("soak")
    if not r:
        return missing("soak")
    return (table(["kill points (target stopped -m immediate, then --resume)", "exact after resume", "seconds"],
                  [[r["soak_kill_points"], r["soak_exact"], r["soak_seconds"]]]) + "\n\n" + provenance(r))


def cdc():
    r = load("cdc")
    if not r:
        return missing("cdc")
    n = int(r["cdc_changes"])
    rows = []
    for kind, what, goal in (("updates", "single-row update transactions", 1.0), ("inserts", "1000-row insert transactions", 2.0)):
        speedup = float(r[f"cdc_{kind}_speedup"])
        rows.append([f"PostgreSQL → PostgreSQL, {n:,} changes as {what}", "PostgreSQL logical replication (subscription)",
                     num(r[f"cdc_{kind}_native_seconds"]), num(r[f"cdc_{kind}_barge_seconds"]),
                     f"**{speedup:.2f}×** native", f"≥ {goal:g}×", "met" if speedup >= goal else "not met"])
    rate = int(r["cdc_mariadb_changes_per_s"])
    rows.append([f"MariaDB → PostgreSQL, {n:,} single-row update transactions", "–", "–",
                 num(r["cdc_mariadb_seconds"]), f"**{rate:,}** changes/s", "≥ 50,000/s", "met" if rate >= 50000 else "not met"])
    if "cdc_lag_median_seconds" in r:
        lag, rate = float(r["cdc_lag_median_seconds"]), int(r["cdc_lag_rate"])
        rows.append([f"PostgreSQL → PostgreSQL, streaming at a steady {rate:,} single-row updates/s for 30 s",
                     "–", "–", "–",
                     f"lag **{lag:.2f} s** median ({float(r['cdc_lag_max_seconds']):.2f} max); RSS "
                     f"{r['cdc_lag_rss_start_mb']} → {r['cdc_lag_rss_end_mb']} MB", "< 1 s, flat RSS",
                     "met" if lag < 1.0 else "not met"])
    bulk = float(r["cdc_bulk_ratio"])
    rows.append([f"bulk phase of a first sync, {int(r['cdc_bulk_rows']):,} rows", "`barge copy` of the same table",
                 num(r["cdc_bulk_copy_seconds"]), num(r["cdc_bulk_sync_seconds"]), f"**{bulk:.2f}×** copy", "≤ 1.1×",
                 "met" if bulk <= 1.1 else "not met"])
    return (table(["workload (a backlog caught up)", "reference", "reference s", "barge s", "result", "goal", ""], rows)
            + "\n\nMedians of three rounds; each round writes a new backlog on the source, then the native subscriber "
            "(enabled) and `barge sync --until caught-up` each catch it up. " + provenance(r))


def migrate():
    r = load("migrate")
    if not r:
        return missing("migrate")
    rows = []
    for name, pair in (("postgres_to_postgres", "PostgreSQL → PostgreSQL"), ("mariadb_to_postgres", "MariaDB → PostgreSQL")):
        for what in ("switchover", "rollback"):
            ms = int(r[f"migrate_{name}_{what}_ms"])
            rows.append([pair, f"`migrate {what}`", f"**{ms:,} ms**", "< 2,000 ms", "met" if ms < 2000 else "not met"])
    if "migrate_big_bang_downtime_ms" in r:
        ms = int(r["migrate_big_bang_downtime_ms"])
        rows.append(["PostgreSQL → PostgreSQL, `strategy = \"big-bang\"`", "`migrate switchover` (`downtime_ms`: "
                     "from the freeze before the copy)", f"**{ms:,} ms**", "–", "the copy and its verification"
                     + (f"; `plan --forecast` said {int(r['migrate_big_bang_forecast_downtime_ms']):,} ms"
                        if "migrate_big_bang_forecast_downtime_ms" in r else "")])
    if "migrate_incremental_wave_switchover_ms" in r:
        ms = int(r["migrate_incremental_wave_switchover_ms"])
        rows.append(["PostgreSQL → PostgreSQL, `strategy = \"incremental\"`", "`migrate switchover --wave 1` "
                     "(its table frozen; the other wave's keep taking writes)", f"**{ms:,} ms**", "< 2,000 ms",
                     "met" if ms < 2000 else "not met"])
    return (table(["pair", "command", "writes frozen (median of 3)", "goal", ""], rows)
            + f"\n\nEach round is a fresh migration of {int(r['migrate_rows']):,} rows, validating while an application "
            f"user commits {int(r['migrate_writer_rows_per_s']):,} single-row inserts a second on the side that takes "
            "writes" + (f" (the fewest rows a source writer committed before its freeze, in 5 s: "
                        f"{int(r['migrate_writer_rows_in_5s_min']):,})" if "migrate_writer_rows_in_5s_min" in r else "")
            + "; the window is barge's `freeze_ms` (freeze, drain, verify the changed tables, sequences, reverse "
            "stream, hook). " + provenance(r))


def distributed():
    r = load("distributed")
    if not r:
        return missing("distributed")
    single = float(r["distributed_single_seconds"])
    rows = [["one `barge run --workers 4`", "–", num(single), "1.00×", "–", ""]]
    for procs, slots in ((1, 4), (2, 2), (4, 1)):
        secs = float(r[f"distributed_{procs}x{slots}_seconds"])
        ratio = secs / single
        rows.append([f"`run --distributed` + {procs} worker process(es) × `--workers {slots}`", f"{procs * slots}",
                     num(secs), f"**{ratio:.2f}×**", "≤ 1.05×", "met" if ratio <= 1.05 else "not met"])
    claims = int(r["distributed_claims_per_s"])
    return (table(["configuration", "slots", "wall s (median of 3)", "against one process", "goal", ""], rows)
            + f"\n\nPostgreSQL → PostgreSQL, {int(r['distributed_rows']):,} rows in 32 ranges, verified, each round "
            "into a fresh database and state store; wall time from the coordinator's start to its exit (the "
            "one-process run likewise). The state store handed out **"
            f"{claims:,} claims/s** (a claim and its completion, {int(r['distributed_claims_ranges']):,} ranges, "
            f"{int(r['distributed_claims_threads'])} connections; goal ≥ 2,000). " + provenance(r))


BLOCKS = {
    "distributed": distributed,
    "machine": machine,
    "end-to-end": end_to_end,
    "peers": peers,
    "pipeline": pipeline,
    "forecast": forecast,
    "micro": micro,
    "memory": memory,
    "soak": soak,
    "cdc": cdc,
    "migrate": migrate,
}


def render(text):
    def replace(match):
        name = match.group(1)
        if name not in BLOCKS:
            sys.exit(f"benches/README.md: unknown generated block `{name}`")
        return f"<!-- BEGIN generated: {name} -->\n{BLOCKS[name]()}\n<!-- END generated: {name} -->"

    pattern = re.compile(r"<!-- BEGIN generated: ([\w-]+) -->.*?<!-- END generated: \1 -->", re.S)
    return pattern.sub(replace, text)


def main():
    text = README.read_text()
    new = render(text)
    if "--check" in sys.argv:
        if new != text:
            sys.exit("benches/README.md differs from benches/results: run scripts/bench.sh readme")
        return
    README.write_text(new)
    print(f"benches/README.md regenerated from {RESULTS.relative_to(ROOT)}/", file=sys.stderr)


if __name__ == "__main__":
    main()
