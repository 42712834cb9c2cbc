//! What a person sees: indicatif bars on a terminal, one line per finished phase otherwise, and
//! the final summaries. Machine-readable output (`--json`) goes to stdout; everything else to stderr.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use barge_core::Key;
use barge_exec::{CopyReport, Phase, Progress, VerifyReport};
use barge_pipeline::preview::PlanReport;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The bars, when stderr is a terminal; log lines are printed through it so they do not tear bars.
static BARS: OnceLock<MultiProgress> = OnceLock::new();

/// Writes log lines to stderr, above the progress bars when there are any.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match BARS.get() {
            Some(bars) => bars.suspend(|| std::io::stderr().write(buf)),
            None => std::io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

fn phase_name(phase: Phase) -> &'static str {
    match phase {
        Phase::Copy => "copy",
        Phase::Verify => "verify",
    }
}

/// Bars per table and phase: rows, rows/s and ETA.
pub struct Bars {
    multi: MultiProgress,
    bars: Mutex<HashMap<(String, &'static str), ProgressBar>>,
}

impl Bars {
    fn bar(&self, table: &str, phase: Phase) -> Option<ProgressBar> {
        self.bars.lock().expect("bars lock").get(&(table.to_string(), phase_name(phase))).cloned()
    }
}

impl Progress for Bars {
    fn started(&self, table: &str, phase: Phase, total_rows: u64) {
        // 80 columns: a 20-column name, a bar taking what is left, counts, rate, and an ETA only
        // once there is a rate to base it on.
        let style = ProgressStyle::with_template(
            "{prefix:20!} {wide_bar:.cyan/blue} {human_pos:>11}/{human_len:<11} {rate:>12} {eta_once:<9}",
        )
        .expect("valid template")
        .with_key("rate", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            let _ = write!(w, "{}/s", thousands(state.per_sec() as u64));
        })
        .with_key("eta_once", |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
            if state.pos() > 0 && state.per_sec() >= 1.0 {
                let _ = write!(w, "ETA {:#}", indicatif::HumanDuration(state.eta()));
            }
        })
        .progress_chars("=> ");
        let bar = self.multi.add(ProgressBar::new(total_rows.max(1)).with_style(style));
        bar.set_prefix(bar_prefix(table, phase));
        bar.enable_steady_tick(Duration::from_millis(200));
        self.bars.lock().expect("bars lock").insert((table.to_string(), phase_name(phase)), bar);
    }

    fn advance(&self, table: &str, phase: Phase, rows: u64) {
        if let Some(bar) = self.bar(table, phase) {
            bar.inc(rows);
            if bar.position() > bar.length().unwrap_or(0) {
                bar.set_length(bar.position()); // the row estimate was low
            }
        }
    }

    fn finished(&self, table: &str, phase: Phase, summary: &str) {
        if let Some(bar) = self.bar(table, phase) {
            bar.set_length(bar.position().max(1));
            bar.set_style(ProgressStyle::with_template("{prefix:20!} {wide_msg}").expect("valid template"));
            bar.finish_with_message(summary.to_string());
        }
    }
}

/// A bar's name: the table, cut to fit with an ellipsis, then the phase.
fn bar_prefix(table: &str, phase: Phase) -> String {
    const NAME: usize = 13;
    let name: String = if table.chars().count() > NAME {
        table.chars().take(NAME - 1).chain(std::iter::once('…')).collect()
    } else {
        table.to_string()
    };
    format!("{name:<NAME$} {}", phase_name(phase))
}

/// One line per finished phase, for logs and pipes.
pub struct Lines;

impl Progress for Lines {
    fn started(&self, _: &str, _: Phase, _: u64) {}
    fn advance(&self, _: &str, _: Phase, _: u64) {}
    fn finished(&self, table: &str, phase: Phase, summary: &str) {
        let _ = writeln!(LogWriter, "{table}: {}: {summary}", phase_name(phase));
    }
}

/// Bars on a terminal, lines otherwise.
pub fn progress() -> Box<dyn Progress> {
    if std::io::stderr().is_terminal() {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let _ = BARS.set(multi.clone());
        Box::new(Bars { multi, bars: Mutex::new(HashMap::new()) })
    } else {
        Box::new(Lines)
    }
}

fn thousands(n: u64) -> String {
    barge_core::text::count(n)
}

fn keys_line(kind: &str, keys: &[serde_json::Value], total: u64) -> Option<String> {
    if total == 0 {
        return None;
    }
    const SHOWN: usize = 10;
    let shown: Vec<String> = keys.iter().take(SHOWN).map(|k| k.to_string()).collect();
    let more = if total as usize > shown.len() { format!(" … ({total} in all)") } else { String::new() };
    Some(format!("    {kind:<8} {}{more}", shown.join(" ")))
}

/// The changed rows with the columns that differ in each, `[7] (email, name)`, then every
/// column with the number of changed rows it differs in.
fn changed_lines(diff: &barge_verify::KeyDiff) -> Vec<String> {
    if diff.changed_columns.is_empty() {
        return keys_line("changed", &diff.changed, diff.changed_total).into_iter().collect();
    }
    const SHOWN: usize = 10;
    let shown: Vec<String> = diff
        .changed_columns
        .iter()
        .take(SHOWN)
        .map(|c| {
            let columns: Vec<&str> =
                c["columns"].as_array().map(|a| a.iter().filter_map(|n| n.as_str()).collect()).unwrap_or_default();
            format!("{} ({})", c["key"], columns.join(", "))
        })
        .collect();
    let total = diff.changed_total;
    let more = if total as usize > shown.len() { format!(" … ({total} in all)") } else { String::new() };
    let by_column: Vec<String> =
        diff.changed_by_column.iter().map(|(column, rows)| format!("{column} in {} rows", thousands(*rows))).collect();
    vec![format!("    changed  {}{more}", shown.join(" ")), format!("    columns  {}", by_column.join(", "))]
}

fn diff_lines(diff: &barge_verify::KeyDiff) -> Vec<String> {
    let mut lines: Vec<String> =
        [keys_line("missing", &diff.missing, diff.missing_total), keys_line("extra", &diff.extra, diff.extra_total)]
            .into_iter()
            .flatten()
            .chain(changed_lines(diff))
            .collect();
    for entry in diff.duplicated.iter().take(10) {
        lines.push(format!(
            "    key {} present {} times, expected {}",
            entry["key"], entry["present"], entry["expected"]
        ));
    }
    if diff.duplicated_total > 10 {
        lines.push(format!("    … ({} duplicated keys in all)", diff.duplicated_total));
    }
    lines
}

/// The tables of a database as `barge tables` lists them (each a JSON entry of its report).
pub fn tables(database: &str, tables: &[serde_json::Value]) -> String {
    let name = tables.iter().filter_map(|t| t["table"].as_str()).map(|n| n.chars().count()).max().unwrap_or(0);
    let name = name.clamp(5, 32);
    let mut out =
        format!("{database}: {} table(s)\n{:<name$} {:>13} {:>11}  key\n", tables.len(), "table", "~rows", "size");
    for t in tables {
        let rows = t["estimated_rows"].as_u64().map_or("-".into(), thousands);
        let size = t["bytes"].as_u64().map_or("-".into(), |b| indicatif::HumanBytes(b).to_string());
        let key = match (t["key"]["kind"].as_str(), &t["error"]) {
            (_, serde_json::Value::Object(error)) => {
                format!("CANNOT BE COPIED: {}", error["message"].as_str().unwrap_or_default())
            }
            (Some("primary"), _) => {
                let columns: Vec<&str> =
                    t["key"]["columns"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
                columns.join(", ")
            }
            (Some("locator"), _) => format!("no key (ranges over {})", t["key"]["locator"].as_str().unwrap_or("?")),
            _ => "no key (read in one range)".into(),
        };
        out.push_str(&format!("{:<name$} {rows:>13} {size:>11}  {key}\n", t["table"].as_str().unwrap_or_default()));
    }
    out.trim_end().to_string()
}

/// The human summary of a copy.
pub fn copy_summary(report: &CopyReport) -> String {
    copy_summary_kept(report, "committed by the interrupted run and kept")
}

/// [`copy_summary`], saying how the ranges a run found committed got there (a distributed run:
/// its workers copied them).
pub fn copy_summary_kept(report: &CopyReport, kept: &str) -> String {
    // 80 columns with names up to 32 characters; a longer name widens its column, never cut.
    let name = report.tables.iter().map(|t| t.table.chars().count()).max().unwrap_or(0).clamp(5, 32);
    let mut out =
        format!("{:<name$} {:>11} {:>6} {:>7} {:>10}  verified\n", "table", "rows", "ranges", "seconds", "rows/s");
    for t in &report.tables {
        let rate = if t.seconds > 0.0 { (t.rows_written as f64 / t.seconds) as u64 } else { 0 };
        let verified = match (&t.error, t.verified) {
            (Some(_), _) => "FAILED",
            (None, Some(true)) => "yes",
            (None, Some(false)) => "NO",
            (None, None) => "skipped",
        };
        out.push_str(&format!(
            "{:<name$} {:>11} {:>6} {:>7.2} {:>10}  {verified}\n",
            t.table,
            thousands(t.rows_written),
            t.partitions,
            t.seconds,
            thousands(rate)
        ));
        if let Some(diff) = &t.diff {
            for line in diff_lines(diff) {
                out.push_str(&line);
                out.push('\n');
            }
        }
        if let Some(error) = &t.error {
            out.push_str(&format!("    error: {}\n    target: {}\n", error.message, error.target));
        }
        for notice in &t.notices {
            out.push_str(&format!("    note: {notice}\n"));
        }
        if t.rows_rejected > 0 {
            let file = t.rejects_file.as_deref().unwrap_or("-");
            out.push_str(&format!("    rejected: {} rows, in {file}\n", thousands(t.rows_rejected)));
        }
        if t.ranges_resumed > 0 {
            out.push_str(&format!("    resumed: {} of {} ranges were {kept}\n", t.ranges_resumed, t.partitions));
        }
        if t.retries > 0 {
            out.push_str(&format!(
                "    retried: {} range attempt(s) failed transiently and were copied again\n",
                t.retries
            ));
        }
        if t.transformed && t.verified.is_some() {
            out.push_str("    verified against the source as transformed by the pipeline\n");
        }
    }
    out.push_str(&schema_lines(report.schema.as_ref(), &report.not_migrated));
    if !report.views.is_empty() {
        out.push_str(&format!("views created after the rows: {}\n", report.views.join(", ")));
    }
    match &report.snapshot {
        Some(snapshot) if snapshot.consistent => out.push_str(&format!("source as of {}\n", snapshot.detail)),
        Some(snapshot) => out
            .push_str(&format!("source read without a snapshot ({}): concurrent writes may differ\n", snapshot.detail)),
        None => {}
    }
    let failed = report.tables.iter().filter(|t| t.error.is_some()).count();
    let verdict = if failed > 0 {
        "SOME TABLES FAILED (the others are as stated above)"
    } else if report.tables.iter().all(|t| t.verified == Some(true)) {
        match &report.snapshot {
            Some(snapshot) if !snapshot.consistent => "verified: target equals source as read (not one snapshot)",
            _ => "verified: target equals source",
        }
    } else if report.ok {
        "not verified"
    } else {
        "VERIFICATION FAILED"
    };
    out.push_str(&format!(
        "copied {} rows in {:.2}s ({} rows/s); {verdict}",
        thousands(report.rows),
        report.seconds,
        thousands(report.rows_per_s as u64)
    ));
    out
}

/// How the schema was made, and every object not migrated, one line each.
pub fn schema_lines(schema: Option<&barge_exec::SchemaReport>, not_migrated: &[barge_core::NotMigrated]) -> String {
    let mut out = String::new();
    match schema {
        Some(s) if s.mode == "exact" => {
            out.push_str(&format!("schema: exact, the source's own dump restored ({})\n", s.counts()));
        }
        Some(s) => {
            out.push_str("schema: translated by barge");
            if let Some(why) = &s.why_not_exact {
                out.push_str(&format!(" (not exact: {why})"));
            }
            out.push('\n');
        }
        None => {}
    }
    for object in not_migrated {
        out.push_str(&format!("  not migrated: {object}\n"));
    }
    out
}

/// The human summary of a verification.
pub fn verify_summary(report: &VerifyReport) -> String {
    let mut out = String::new();
    for t in &report.tables {
        let verdict = if t.matched { "match" } else { "MISMATCH" };
        out.push_str(&format!(
            "{:<24} source {:>12} rows, target {:>12} rows: {verdict}\n",
            t.table,
            thousands(t.source_rows),
            thousands(t.target_rows)
        ));
        for line in diff_lines(&t.diff) {
            out.push_str(&line);
            out.push('\n');
        }
    }
    if !report.only_in_target.is_empty() {
        out.push_str(&format!("tables only in the target: {}\n", report.only_in_target.join(", ")));
    }
    if let Some(recheck) = report.recheck.as_ref().filter(|r| r.rounds > 0 || r.timed_out) {
        let in_flight: u64 = report.tables.iter().map(|t| t.in_flight).sum();
        let at = recheck.position.as_deref().unwrap_or("?");
        out.push_str(&if recheck.timed_out {
            format!(
                "sync stream {} did not apply past {at} in time (is sync running?): differences as last seen\n",
                recheck.stream
            )
        } else {
            format!(
                "re-checked {} time(s) once sync stream {} applied past {at}: {} key(s) were changes in flight\n",
                recheck.rounds,
                recheck.stream,
                thousands(in_flight)
            )
        });
    }
    out.push_str(if report.ok { "target equals source" } else { "target differs from source" });
    out
}

/// The human form of a plan.
pub fn plan_summary(report: &PlanReport) -> String {
    let mut out = plan_body(report);
    out.push_str(if report.ok {
        "\nplan ok: `barge run` would start"
    } else {
        "\nplan has unaccepted risks: `barge run` would refuse to start"
    });
    out
}

/// A plan's tables (partitions, DDL, columns, risks), its schema's mode and what it would not migrate.
pub fn plan_body(report: &PlanReport) -> String {
    let mut out = format!("plan of {}\n  from {}\n  to   {}\n", report.pipeline, report.source, report.target);
    if !report.schema_versions.is_empty() {
        out.push_str("schema versions:\n");
        for v in &report.schema_versions {
            let when = v.applied_on.as_deref().map(|at| format!(" on {at}")).unwrap_or_default();
            out.push_str(&format!("  {:<32} {}{when}, {} (checksum {})\n", v.name, v.state, v.stage, v.checksum));
        }
        if report.schema_versions.iter().any(|v| v.state == "pending" && v.stage == "before the rows") {
            out.push_str("  (the tables below are planned as the target is now: the pending versions run first)\n");
        }
    }
    for t in &report.tables {
        out.push_str(&format!(
            "\ntable {} → {} ({:?}, ~{} rows, key {}, conflict {:?}, error budget {})\n",
            t.source_table,
            t.target_table,
            t.action,
            t.estimated_rows,
            if t.key.is_empty() { "none".to_string() } else { t.key.join(", ") },
            t.conflict,
            t.error_budget
        ));
        if let Some(filter) = &t.filter {
            out.push_str(&format!("  where {filter}\n"));
        }
        if let Some(inc) = &t.incremental {
            let mark = |m: &Option<barge_core::Scalar>| m.as_ref().map_or("-".to_string(), ToString::to_string);
            out.push_str(&format!(
                "  incremental on {}: rows from {} (last mark less lookback), recording {}{}\n",
                inc.column,
                inc.since.as_ref().map_or("the start".to_string(), ToString::to_string),
                mark(&inc.until),
                if inc.detect_deletes { ", deletes detected" } else { "" }
            ));
        }
        out.push_str(&format!("  {} partition(s):\n", t.partitions.len()));
        for p in &t.partitions {
            let bound = |b: &Option<Key>| b.as_ref().map_or("∞".to_string(), |k| barge_core::model::display_key(k));
            out.push_str(&format!(
                "    #{:<3} [{}, {})  ~{} rows\n",
                p.id,
                p.lo.as_ref().map_or("-∞".to_string(), |k| barge_core::model::display_key(k)),
                bound(&p.hi),
                p.estimated_rows
            ));
        }
        if let Some(ddl) = &t.ddl {
            out.push_str("  DDL:\n");
            for line in ddl.lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
        if !t.checks.is_empty() {
            out.push_str("  indexes and checks, added after the rows if the target takes them:\n");
            for check in &t.checks {
                out.push_str(&format!("    {check}\n"));
            }
        }
        out.push_str("  columns:\n");
        for c in &t.columns {
            let expr = c.expr.as_ref().map(|e| format!("  = {e}")).unwrap_or_default();
            out.push_str(&format!(
                "    {:<20} {:<28} → {:<28} {}{expr}\n",
                c.name, c.source_type, c.target_type, c.fidelity
            ));
        }
        // (A copy's dry run samples nothing.)
        if t.sampled_rows > 0 || !t.risks.is_empty() {
            out.push_str(&format!("  data sample: {} rows\n", t.sampled_rows));
        }
        for r in &t.risks {
            let verdict = if r.accepted { "accepted" } else { "RISK" };
            out.push_str(&format!("    {verdict}: {}: {} — {}\n", r.column, r.risk.name(), r.detail));
        }
    }
    for failed in &report.failed {
        out.push_str(&format!("\ntable {}: CANNOT BE COPIED: {}\n", failed.table, failed.message));
    }
    out.push('\n');
    out.push_str(&schema_lines(Some(&report.schema), &report.not_migrated));
    if !report.views.is_empty() {
        out.push_str(&format!(
            "views, created after the rows if the target takes their SQL: {}\n",
            report.views.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bar_names_fit_their_column() {
        assert_eq!(bar_prefix("orders", Phase::Copy), "orders        copy");
        let long = bar_prefix("customer_addresses_archive", Phase::Verify);
        assert_eq!(long, "customer_add… verify");
        assert_eq!(long.chars().count(), 20);
    }

    #[test]
    fn thousands_are_grouped() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
