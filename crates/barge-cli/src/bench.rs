//! `barge bench`: copies a representative sample of each table (whole key ranges spread over the
//! key space) into a scratch place of the target, once per worker count, each run a child
//! `barge copy` process (so its peak memory is its own and an interrupt stops it cleanly), then
//! reports throughput, where the time went, and a forecast of the full copy.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use barge_core::Error;
use barge_exec::{CopyReport, StageSeconds};
use serde::Serialize;

use crate::engines;

/// One table in one run.
#[derive(Clone, Debug, Serialize)]
pub struct TableRun {
    pub table: String,
    pub rows: u64,
    pub seconds: f64,
    pub rows_per_s: f64,
    pub mb_per_s: f64,
    /// Busy seconds per stage (read, cpu, write summed over threads; verify wall time).
    pub stages: StageSeconds,
    /// The stage with the most busy time per worker.
    pub bottleneck: String,
    /// `[seconds, rows written so far]` over the copy, from the run's own counters.
    pub timeline: Vec<(f64, u64)>,
    /// `[seconds since the verification started, rows digested so far]`.
    pub verify_timeline: Vec<(f64, u64)>,
}

impl TableRun {
    /// rows/s between consecutive timeline samples, at each interval's midpoint.
    pub fn rates(&self) -> Vec<(f64, f64)> {
        self.timeline
            .windows(2)
            .filter(|w| w[1].0 > w[0].0)
            .map(|w| ((w[0].0 + w[1].0) / 2.0, w[1].1.saturating_sub(w[0].1) as f64 / (w[1].0 - w[0].0)))
            .collect()
    }
}

/// One run at one worker count.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub workers: usize,
    pub seconds: f64,
    pub rows: u64,
    pub rows_per_s: f64,
    pub peak_rss_mb: Option<f64>,
    pub tables: Vec<TableRun>,
}

/// A table's forecast.
#[derive(Clone, Debug, Serialize)]
pub struct Forecast {
    pub table: String,
    pub estimated_rows: u64,
    pub best_workers: usize,
    pub rows_per_s: f64,
    /// Estimated seconds to copy and verify the whole table at the best worker count.
    pub forecast_seconds: f64,
}

/// The whole benchmark (the `--json` form and report.json).
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    pub source: String,
    pub target: String,
    /// Rows sampled per table (with `--sample-seconds`, as the calibration run sized it).
    pub sample_rows: u64,
    /// The `--sample-seconds` asked for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_seconds: Option<f64>,
    pub runs: Vec<Run>,
    pub forecasts: Vec<Forecast>,
    pub best_workers: usize,
    pub forecast_seconds: f64,
    /// The forecast of a distributed run on many machines, and where it stops scaling.
    pub scaling: Option<crate::scaling::ScalingModel>,
}

/// Seconds to move `rows` at `rows_per_s` (copy and verification both scale with rows).
pub fn forecast_seconds(rows: u64, rows_per_s: f64) -> f64 {
    if rows_per_s > 0.0 { rows as f64 / rows_per_s } else { f64::INFINITY }
}

/// A phase's start-up (seconds before rows flowed at its steady rate) and steady rate (rows/s),
/// from its timeline: from the first rows done to the end.
fn steady(timeline: &[(f64, u64)]) -> Option<(f64, f64)> {
    let &(t0, r0) = timeline.iter().find(|(_, done)| *done > 0)?;
    let &(t1, r1) = timeline.last()?;
    (t1 > t0 && r1 > r0).then(|| {
        let rate = (r1 - r0) as f64 / (t1 - t0);
        ((t0 - r0 as f64 / rate).max(0.0), rate)
    })
}

/// Seconds to copy and verify `rows` rows of a table, scaled from its sampled run. Each phase
/// (the copy, then the verification) counts its start-up once (connecting, planning, the first
/// batches in flight) and runs at its steady rate, both read off the phase's timeline; what lies
/// between them scales with rows. A sample's fixed costs weigh ten times more in it than in the
/// whole table, so scaling its overall rate overestimates. Without usable timelines: the run's
/// overall rate.
pub fn forecast_table(run: &TableRun, rows: u64) -> f64 {
    let Some((startup, rate)) = steady(&run.timeline).filter(|_| run.rows > 0) else {
        return forecast_seconds(rows, run.rows_per_s);
    };
    let scale = rows as f64 / run.rows as f64;
    let copy_end = run.timeline.last().map_or(0.0, |(t, _)| *t);
    let after_copy = (run.seconds - copy_end).max(0.0);
    let verify = match (steady(&run.verify_timeline), run.verify_timeline.last()) {
        (Some((v_startup, v_rate)), Some(&(v_end, digested))) => {
            let between = (after_copy - v_end).max(0.0);
            v_startup + digested as f64 * scale / v_rate + between * scale
        }
        _ => after_copy * scale,
    };
    startup + rows as f64 / rate + verify
}

/// The stage with the most busy time per worker (read, cpu and write run on up to `workers`
/// threads each; verification is reported as wall time).
pub fn bottleneck(stages: &StageSeconds, workers: usize) -> String {
    let per_worker = |busy: f64| busy / workers.max(1) as f64;
    let candidates = [
        ("read", per_worker(stages.read)),
        ("transform+hash", per_worker(stages.cpu)),
        ("write", per_worker(stages.write)),
        ("verify", stages.verify),
    ];
    candidates.iter().max_by(|a, b| a.1.total_cmp(&b.1)).map_or("-", |(n, _)| n).to_string()
}

/// How big a sample to take of each table.
#[derive(Clone, Copy, Debug)]
pub enum Sample {
    /// About this many rows per table.
    Rows(u64),
    /// About this many seconds per run: a short calibration run measures the rate first.
    Seconds(f64),
}

/// Rows of the calibration run that sizes a `--sample-seconds` sample, per table.
const CALIBRATION_ROWS: u64 = 20_000;

/// Rows per table for a sample of `seconds` per run at `rows_per_s` over `tables` tables (at least
/// the calibration's size).
pub fn rows_for_seconds(seconds: f64, rows_per_s: f64, tables: usize) -> u64 {
    let rows = seconds * rows_per_s / tables.max(1) as f64;
    if rows.is_finite() { (rows as u64).max(CALIBRATION_ROWS) } else { CALIBRATION_ROWS }
}

/// A 10 Gbit/s NIC, in MB/s.
pub const DEFAULT_NETWORK_MB_PER_S: f64 = 1250.0;

/// Options of a benchmark.
pub struct BenchOptions<'a> {
    pub from: &'a str,
    pub to: &'a str,
    pub tables: &'a [String],
    pub sample: Sample,
    pub workers: &'a [usize],
    pub batch_rows: Option<usize>,
    /// Machine counts the scaling model forecasts.
    pub machines: &'a [usize],
    /// Each NIC's bandwidth the scaling model assumes, MB/s.
    pub network_mb_per_s: f64,
}

/// Runs the benchmark. The scratch place is removed at the end, on failure and on Ctrl-C.
pub fn run(options: &BenchOptions<'_>) -> Result<BenchReport, Error> {
    let registry = engines::registry();
    let source_engine = registry.for_url(options.from)?;
    let target_engine = registry.for_url(options.to)?;
    target_engine.check_url(options.to)?;
    let scratch_space = target_engine
        .scratch()
        .ok_or_else(|| Error::unsupported(target_engine.name(), "make scratch places for benchmarks"))?;
    let valid_sample = match options.sample {
        Sample::Rows(rows) => rows > 0,
        Sample::Seconds(seconds) => seconds > 0.0 && seconds.is_finite(),
    };
    if options.workers.is_empty() || options.workers.contains(&0) || !valid_sample {
        return Err(Error::Config(
            "--workers takes counts of at least 1, --sample-rows and --sample-seconds more than 0".into(),
        ));
    }
    let source = source_engine.open_source(options.from)?;
    let names = if options.tables.is_empty() { source.list_tables()? } else { options.tables.to_vec() };
    let estimates = names
        .iter()
        .map(|name| source.table(name).map(|t| (name.clone(), t.estimated_rows)))
        .collect::<Result<Vec<_>, _>>()?;
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    // A second handler cannot be installed (a test binary running bench twice): then Ctrl-C
    // falls back to its default, which still ends the child and this process.
    let _ = ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst));
    let scratch = scratch_space.create_scratch(options.to, &std::process::id().to_string())?;
    let runs = size_sample(options, &scratch, names.len(), &interrupted)
        .and_then(|rows| Ok((rows, run_all(options, &scratch, rows, &interrupted)?)));
    let dropped = scratch_space.drop_scratch(&scratch);
    if interrupted.load(Ordering::SeqCst) {
        dropped?;
        return Err(Error::Engine {
            context: "bench".into(),
            message: "interrupted; the scratch place was removed".into(),
        });
    }
    let (sample_rows, runs) = runs?;
    dropped?;
    // Each table's forecast at each worker count; the best count is the one with the least time.
    let forecast_at =
        |run: &Run, name: &str, rows: u64| run.tables.iter().find(|t| t.table == name).map(|t| forecast_table(t, rows));
    let forecasts: Vec<Forecast> = estimates
        .iter()
        .filter_map(|(name, estimated)| {
            let (workers, seconds) = runs
                .iter()
                .filter_map(|r| forecast_at(r, name, *estimated).map(|s| (r.workers, s)))
                .min_by(|a, b| a.1.total_cmp(&b.1))?;
            Some(Forecast {
                table: name.clone(),
                estimated_rows: *estimated,
                best_workers: workers,
                rows_per_s: if seconds > 0.0 { *estimated as f64 / seconds } else { 0.0 },
                forecast_seconds: seconds,
            })
        })
        .collect();
    let (best, total) = runs
        .iter()
        .map(|r| (r.workers, estimates.iter().filter_map(|(name, rows)| forecast_at(r, name, *rows)).sum::<f64>()))
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .unwrap_or((1, 0.0));
    let rows: u64 = estimates.iter().map(|(_, rows)| rows).sum();
    let scaling = crate::scaling::model(&runs, rows, options.machines, options.network_mb_per_s);
    Ok(BenchReport {
        scaling,
        source: source.display_name(),
        target: barge_core::url::redact(options.to),
        sample_rows,
        sample_seconds: match options.sample {
            Sample::Seconds(seconds) => Some(seconds),
            Sample::Rows(_) => None,
        },
        runs,
        forecasts,
        best_workers: best,
        forecast_seconds: total,
    })
}

/// A pipeline's forecast, as `plan --forecast` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct PipelineForecast {
    /// Rows copied per table by the bench's sample.
    pub sample_rows: u64,
    pub workers: usize,
    /// The whole copy (rows, then its verification).
    pub copy_seconds: f64,
    /// Of which the verification.
    pub verify_seconds: f64,
    /// `big-bang` migrations: the source is frozen from before the copy to the switch, which
    /// waits for one more full verification pass: copy + verification.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_seconds: Option<f64>,
    pub tables: Vec<Forecast>,
}

/// Benchmarks `pipeline`'s tables at `workers` for about `seconds` and forecasts its copy (and a
/// big-bang migration's downtime).
pub fn forecast_pipeline(
    pipeline: &barge_pipeline::Pipeline,
    workers: usize,
    seconds: f64,
) -> Result<PipelineForecast, Error> {
    let tables: Vec<String> = pipeline.tables.iter().map(|t| t.source.clone()).collect();
    let workers_tried = [workers];
    let report = run(&BenchOptions {
        from: &pipeline.source,
        to: &pipeline.target,
        tables: &tables,
        sample: Sample::Seconds(seconds),
        workers: &workers_tried,
        batch_rows: pipeline.batch_rows,
        machines: &[],
        network_mb_per_s: DEFAULT_NETWORK_MB_PER_S,
    })?;
    // The verification's share, per table, scaled as the rows are.
    let verify_seconds: f64 = report
        .runs
        .first()
        .map(|run| {
            run.tables
                .iter()
                .filter(|t| t.rows > 0)
                .map(|t| {
                    let estimated =
                        report.forecasts.iter().find(|f| f.table == t.table).map_or(0, |f| f.estimated_rows);
                    t.stages.verify * estimated as f64 / t.rows as f64
                })
                .sum()
        })
        .unwrap_or(0.0);
    let big_bang = pipeline.migration.as_ref().is_some_and(|m| m.strategy == "big-bang");
    Ok(PipelineForecast {
        sample_rows: report.sample_rows,
        workers,
        copy_seconds: report.forecast_seconds,
        verify_seconds,
        downtime_seconds: big_bang.then_some(report.forecast_seconds + verify_seconds),
        tables: report.forecasts,
    })
}

pub fn render_forecast(forecast: &PipelineForecast) -> String {
    let mut out = format!(
        "forecast (barge bench, {} rows sampled per table, {} worker(s)): the copy ~{:.1} s, its verification \
         ~{:.1} s of it",
        forecast.sample_rows, forecast.workers, forecast.copy_seconds, forecast.verify_seconds
    );
    for t in &forecast.tables {
        out.push_str(&format!("\n  {}: ~{} rows in ~{:.1} s", t.table, t.estimated_rows, t.forecast_seconds));
    }
    if let Some(downtime) = forecast.downtime_seconds {
        out.push_str(&format!(
            "\nbig-bang downtime: ~{downtime:.1} s (the source frozen from before the copy until the switch: the \
             copy, then one more verification pass)"
        ));
    }
    out
}

/// Rows to sample per table: as asked, or sized from a calibration run at the largest worker count
/// so that a run takes about `--sample-seconds`.
fn size_sample(
    options: &BenchOptions<'_>,
    scratch: &str,
    tables: usize,
    interrupted: &AtomicBool,
) -> Result<u64, Error> {
    let seconds = match options.sample {
        Sample::Rows(rows) => return Ok(rows),
        Sample::Seconds(seconds) => seconds,
    };
    let workers = options.workers.iter().copied().max().unwrap_or(1);
    let Some(probe) = run_once(options, scratch, workers, CALIBRATION_ROWS, interrupted)? else {
        return Ok(CALIBRATION_ROWS);
    };
    let rate = if probe.seconds > 0.0 { probe.rows as f64 / probe.seconds } else { 0.0 };
    let rows = rows_for_seconds(seconds, rate, tables);
    tracing::info!("calibration: {} rows in {:.2}s; sampling ~{rows} rows per table", probe.rows, probe.seconds);
    Ok(rows)
}

fn run_all(
    options: &BenchOptions<'_>,
    scratch: &str,
    sample_rows: u64,
    interrupted: &AtomicBool,
) -> Result<Vec<Run>, Error> {
    let mut runs = Vec::with_capacity(options.workers.len());
    for &workers in options.workers {
        match run_once(options, scratch, workers, sample_rows, interrupted)? {
            Some(run) => runs.push(run),
            None => break,
        }
    }
    Ok(runs)
}

/// One child `barge copy` of the sample; `None` when interrupted.
fn run_once(
    options: &BenchOptions<'_>,
    scratch: &str,
    workers: usize,
    sample_rows: u64,
    interrupted: &AtomicBool,
) -> Result<Option<Run>, Error> {
    let exe = std::env::current_exe().map_err(|e| Error::engine("finding the barge executable", e))?;
    let mut command = Command::new(&exe);
    command.args(["copy", "--from", options.from, "--to", scratch, "--if-exists", "truncate", "--json"]);
    command.args(["--sample-rows", &sample_rows.to_string(), "--workers", &workers.to_string()]);
    if let Some(rows) = options.batch_rows {
        command.args(["--batch-rows", &rows.to_string()]);
    }
    for table in options.tables {
        command.args(["--table", table]);
    }
    // The child's progress goes straight to this terminal; its JSON comes back on stdout.
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Error::engine("starting a benchmark run", e))?;
    let status = loop {
        if interrupted.load(Ordering::SeqCst) {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        match child.try_wait().map_err(|e| Error::engine("waiting for a benchmark run", e))? {
            Some(status) => break status,
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        std::io::Read::read_to_string(&mut out, &mut stdout).map_err(|e| Error::engine("reading a run", e))?;
    }
    if !status.success() {
        return Err(Error::Engine {
            context: format!("benchmark run with {workers} worker(s)"),
            message: format!("barge copy exited with {status}"),
        });
    }
    let report: CopyReport = serde_json::from_str(&stdout).map_err(|e| Error::engine("reading a run's JSON", e))?;
    Ok(Some(run_of(workers, report)))
}

fn run_of(workers: usize, report: CopyReport) -> Run {
    let tables = report
        .tables
        .into_iter()
        .map(|t| {
            let rate = |x: f64| if t.seconds > 0.0 { x / t.seconds } else { 0.0 };
            TableRun {
                rows: t.rows_written,
                seconds: t.seconds,
                rows_per_s: rate(t.rows_written as f64),
                mb_per_s: rate(t.bytes_read as f64 / 1e6),
                bottleneck: bottleneck(&t.stages, workers),
                stages: t.stages,
                timeline: t.timeline,
                verify_timeline: t.verify_timeline,
                table: t.table,
            }
        })
        .collect();
    Run {
        workers,
        seconds: report.seconds,
        rows: report.rows,
        rows_per_s: report.rows_per_s,
        peak_rss_mb: report.peak_rss_mb,
        tables,
    }
}

/// Colours of the charts' series, in order.
const PALETTE: [&str; 8] = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7"];

/// Text for HTML and SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The human summary.
pub fn render(report: &BenchReport) -> String {
    let mut out =
        format!("bench {} → {} (sample of ~{} rows per table)\n", report.source, report.target, report.sample_rows);
    out.push_str(&format!(
        "{:>7} {:<20} {:>10} {:>12} {:>9} {:>9}  bottleneck\n",
        "workers", "table", "rows", "rows/s", "MB/s", "RSS MB"
    ));
    for run in &report.runs {
        for t in &run.tables {
            out.push_str(&format!(
                "{:>7} {:<20} {:>10} {:>12.0} {:>9.1} {:>9}  {}\n",
                run.workers,
                t.table,
                t.rows,
                t.rows_per_s,
                t.mb_per_s,
                run.peak_rss_mb.map_or("-".into(), |m| format!("{m:.0}")),
                t.bottleneck
            ));
        }
    }
    for f in &report.forecasts {
        out.push_str(&format!(
            "forecast {}: ~{} rows in {:.1}s at {} worker(s)\n",
            f.table, f.estimated_rows, f.forecast_seconds, f.best_workers
        ));
    }
    out.push_str(&format!(
        "forecast: the whole copy in {:.1}s with {} worker(s)",
        report.forecast_seconds, report.best_workers
    ));
    if let Some(model) = report.scaling.as_ref().filter(|m| !m.points.is_empty()) {
        out.push('\n');
        out.push_str(&crate::scaling::render(model));
    }
    out
}

/// A bar chart (SVG) of rows/s per worker count, per table.
pub fn throughput_svg(report: &BenchReport) -> String {
    let tables: Vec<String> =
        report.runs.first().map(|r| r.tables.iter().map(|t| escape(&t.table)).collect()).unwrap_or_default();
    let max = report.runs.iter().flat_map(|r| r.tables.iter().map(|t| t.rows_per_s)).fold(1.0, f64::max);
    let (bar, gap, height) = (28.0, 18.0, 220.0);
    let group = tables.len() as f64 * bar + gap;
    let width = (80.0 + report.runs.len() as f64 * group).max(80.0 + tables.len() as f64 * 120.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\
         <text x=\"10\" y=\"16\" font-size=\"13\">rows/s by worker count</text>",
        height + 70.0
    );
    for (i, run) in report.runs.iter().enumerate() {
        let x0 = 60.0 + i as f64 * group;
        for (j, t) in run.tables.iter().enumerate() {
            let h = t.rows_per_s / max * height;
            let x = x0 + j as f64 * bar;
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{} @ {} workers: {:.0} rows/s</title></rect>",
                30.0 + height - h,
                bar - 4.0,
                PALETTE[j % PALETTE.len()],
                escape(&t.table),
                run.workers,
                t.rows_per_s
            ));
        }
        svg.push_str(&format!("<text x=\"{:.1}\" y=\"{:.1}\">{} worker(s)</text>", x0, height + 48.0, run.workers));
    }
    svg.push_str(&format!("<text x=\"4\" y=\"34\">{max:.0}</text><text x=\"4\" y=\"{:.1}\">0</text>", 30.0 + height));
    for (j, table) in tables.iter().enumerate() {
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{:.1}\">{table}</text>",
            60 + j * 120,
            height + 56.0,
            PALETTE[j % PALETTE.len()],
            74 + j * 120,
            height + 65.0
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// A line chart (SVG) of rows/s over time, one line per table and worker count.
pub fn timeline_svg(report: &BenchReport) -> String {
    let lines: Vec<(String, Vec<(f64, f64)>)> = report
        .runs
        .iter()
        .flat_map(|r| {
            r.tables.iter().map(move |t| (escape(&format!("{} @ {} worker(s)", t.table, r.workers)), t.rates()))
        })
        .collect();
    let max_t = lines.iter().flat_map(|(_, p)| p.iter().map(|(t, _)| *t)).fold(1e-9, f64::max);
    let max_r = lines.iter().flat_map(|(_, p)| p.iter().map(|(_, r)| *r)).fold(1.0, f64::max);
    let (left, top, width, height) = (70.0, 30.0, 520.0, 200.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\
         <text x=\"10\" y=\"16\" font-size=\"13\">rows/s over time (copy)</text>\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{}\" stroke=\"#999\"/>\
         <line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#999\"/>\
         <text x=\"4\" y=\"{}\">{max_r:.0}</text><text x=\"4\" y=\"{}\">0</text>\
         <text x=\"{left}\" y=\"{}\">0 s</text><text x=\"{}\" y=\"{}\" text-anchor=\"end\">{max_t:.2} s</text>",
        left + width + 20.0,
        top + height + 50.0 + lines.len() as f64 * 14.0,
        top + height,
        top + height,
        left + width,
        top + height,
        top + 4.0,
        top + height,
        top + height + 14.0,
        left + width,
        top + height + 14.0,
    );
    for (i, (label, points)) in lines.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let coords: Vec<String> = points
            .iter()
            .map(|(t, r)| format!("{:.1},{:.1}", left + t / max_t * width, top + height - r / max_r * height))
            .collect();
        svg.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\" points=\"{}\"><title>{label}</title></polyline>",
            coords.join(" ")
        ));
        let y = top + height + 32.0 + i as f64 * 14.0;
        svg.push_str(&format!(
            "<rect x=\"{left}\" y=\"{:.1}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{:.1}\">{label}</text>",
            y - 9.0,
            left + 14.0,
            y
        ));
    }
    svg.push_str("</svg>");
    svg
}

fn stage_seconds(stages: &StageSeconds, name: &str) -> f64 {
    match name {
        "read" => stages.read,
        "cpu" => stages.cpu,
        "write" => stages.write,
        _ => stages.verify,
    }
}

/// Stacked bars (SVG) of each run's stage busy time per worker.
fn stages_svg(report: &BenchReport) -> String {
    let stages = [("read", "#4e79a7"), ("cpu", "#f28e2b"), ("write", "#59a14f"), ("verify", "#e15759")];
    let rows: Vec<(String, Vec<f64>)> = report
        .runs
        .iter()
        .flat_map(|r| {
            r.tables.iter().map(move |t| {
                let values = stages
                    .iter()
                    .map(|(s, _)| {
                        let v = stage_seconds(&t.stages, s);
                        if *s == "verify" { v } else { v / r.workers as f64 }
                    })
                    .collect();
                (escape(&format!("{} @ {}", t.table, r.workers)), values)
            })
        })
        .collect();
    let max = rows.iter().map(|(_, v)| v.iter().sum::<f64>()).fold(1e-9, f64::max);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"620\" height=\"{}\" font-family=\"sans-serif\" font-size=\"11\">\
         <text x=\"10\" y=\"16\" font-size=\"13\">busy seconds per worker, by stage</text>",
        40 + rows.len() * 22 + 30
    );
    for (i, (label, values)) in rows.iter().enumerate() {
        let y = 30 + i * 22;
        svg.push_str(&format!("<text x=\"4\" y=\"{}\">{label}</text>", y + 13));
        let mut x = 170.0;
        for ((stage, color), v) in stages.iter().zip(values) {
            let w = v / max * 420.0;
            svg.push_str(&format!(
                "<rect x=\"{x:.1}\" y=\"{y}\" width=\"{w:.1}\" height=\"16\" fill=\"{color}\"><title>{stage}: {v:.2}s</title></rect>"
            ));
            x += w;
        }
    }
    let y = 40 + rows.len() * 22;
    for (i, (stage, color)) in stages.iter().enumerate() {
        svg.push_str(&format!(
            "<rect x=\"{}\" y=\"{y}\" width=\"10\" height=\"10\" fill=\"{color}\"/><text x=\"{}\" y=\"{}\">{stage}</text>",
            170 + i * 90,
            184 + i * 90,
            y + 9
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// Writes report.json, throughput.svg and a self-contained report.html into `dir`.
pub fn write_report(report: &BenchReport, dir: &Path) -> Result<(), Error> {
    let io = |what: &str, e: std::io::Error| Error::engine(format!("writing {what} in {}", dir.display()), e);
    std::fs::create_dir_all(dir).map_err(|e| io("the report", e))?;
    let json = serde_json::to_string_pretty(report).map_err(|e| Error::engine("encoding the report", e))?;
    std::fs::write(dir.join("report.json"), &json).map_err(|e| io("report.json", e))?;
    let throughput = throughput_svg(report);
    std::fs::write(dir.join("throughput.svg"), &throughput).map_err(|e| io("throughput.svg", e))?;
    let mut rows = String::new();
    for run in &report.runs {
        for t in &run.tables {
            rows.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.0}</td><td>{:.1}</td><td>{}</td><td>{}</td></tr>",
                run.workers,
                escape(&t.table),
                t.rows,
                t.seconds,
                t.rows_per_s,
                t.mb_per_s,
                run.peak_rss_mb.map_or("-".into(), |m| format!("{m:.0}")),
                t.bottleneck
            ));
        }
    }
    let mut forecasts = String::new();
    for f in &report.forecasts {
        forecasts.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.1}</td></tr>",
            escape(&f.table),
            f.estimated_rows,
            f.best_workers,
            f.rows_per_s,
            f.forecast_seconds
        ));
    }
    let html = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>barge bench</title><style>\
         body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}\
         </style></head><body><h1>barge bench</h1><p>{} → {} · sample of ~{} rows per table · \
         forecast: the whole copy in <b>{:.1} s</b> with <b>{}</b> worker(s)</p>{throughput}{}{}\
         <h2>Runs</h2><table><tr><th>workers</th><th>table</th><th>rows</th><th>seconds</th><th>rows/s</th><th>MB/s</th>\
         <th>peak RSS MB</th><th>bottleneck</th></tr>{rows}</table>\
         <h2>Forecast</h2><table><tr><th>table</th><th>estimated rows</th><th>best workers</th><th>rows/s</th><th>seconds</th></tr>\
         {forecasts}</table><h2>Raw figures</h2><pre>{}</pre></body></html>",
        escape(&report.source),
        escape(&report.target),
        report.sample_rows,
        report.forecast_seconds,
        report.best_workers,
        stages_svg(report),
        timeline_svg(report),
        escape(&json)
    );
    std::fs::write(dir.join("report.html"), html).map_err(|e| io("report.html", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forecasts_scale_the_measured_rate_to_the_whole_table() {
        assert_eq!(forecast_seconds(1_000_000, 250_000.0), 4.0);
        assert_eq!(forecast_seconds(0, 250_000.0), 0.0);
        assert!(forecast_seconds(10, 0.0).is_infinite());
    }

    fn sampled(rows: u64, seconds: f64, timeline: Vec<(f64, u64)>) -> TableRun {
        TableRun {
            table: "t".into(),
            rows,
            seconds,
            rows_per_s: rows as f64 / seconds,
            mb_per_s: 0.0,
            stages: StageSeconds::default(),
            bottleneck: String::new(),
            timeline,
            verify_timeline: Vec::new(),
        }
    }

    #[test]
    fn the_verification_counts_its_own_start_up_once_too() {
        // The copy as below (0.1 s + 2.0 s for 200,000 rows); then 0.05 s before the verification
        // starts, and a verification of 0.04 s start-up and 200,000 rows/s (20,000 rows by 0.14 s):
        // 0.5 s + 0.04 s + 1.0 s for the full table.
        let mut run = sampled(20_000, 0.49, vec![(0.0, 0), (0.15, 5_000), (0.25, 15_000), (0.3, 20_000)]);
        run.verify_timeline = vec![(0.0, 0), (0.065, 5_000), (0.14, 20_000)];
        let expected = 0.1 + 2.0 + 0.05 * 10.0 + 0.04 + 1.0;
        assert!((forecast_table(&run, 200_000) - expected).abs() < 1e-9, "{}", forecast_table(&run, 200_000));
    }

    #[test]
    fn a_forecast_counts_the_start_up_once_and_scales_the_rest() {
        // 0.1 s of start-up, then 100,000 rows/s until 0.3 s (20,000 rows), then 0.1 s of
        // verification: the full 200,000 rows take 0.1 + 2.0 + 1.0 s.
        let run = sampled(20_000, 0.4, vec![(0.0, 0), (0.15, 5_000), (0.25, 15_000), (0.3, 20_000)]);
        assert!((forecast_table(&run, 200_000) - 3.1).abs() < 1e-9, "{}", forecast_table(&run, 200_000));
        // Scaling the overall rate instead would say 4.0 s.
        assert_eq!(forecast_seconds(200_000, run.rows_per_s), 4.0);
        // Without a timeline (or rows), the overall rate.
        assert_eq!(forecast_table(&sampled(20_000, 0.4, vec![(0.0, 0)]), 200_000), 4.0);
        assert_eq!(forecast_table(&sampled(20_000, 0.4, Vec::new()), 200_000), 4.0);
        assert!(forecast_table(&sampled(0, 0.4, Vec::new()), 10).is_infinite());
    }

    #[test]
    fn a_sample_in_seconds_is_sized_from_the_calibrated_rate() {
        // 2 s at 300,000 rows/s over 3 tables: 200,000 rows each.
        assert_eq!(rows_for_seconds(2.0, 300_000.0, 3), 200_000);
        // Never below the calibration's own size, nor undefined without a rate.
        assert_eq!(rows_for_seconds(0.01, 300_000.0, 1), CALIBRATION_ROWS);
        assert_eq!(rows_for_seconds(2.0, 0.0, 1), CALIBRATION_ROWS);
        assert_eq!(rows_for_seconds(2.0, f64::NAN, 1), CALIBRATION_ROWS);
    }

    #[test]
    fn the_bottleneck_is_the_busiest_stage_per_worker() {
        let stages = StageSeconds { read: 4.0, cpu: 1.0, write: 6.0, verify: 1.5 };
        assert_eq!(bottleneck(&stages, 2), "write");
        let stages = StageSeconds { read: 4.0, cpu: 1.0, write: 2.0, verify: 2.5 };
        assert_eq!(bottleneck(&stages, 2), "verify");
    }
}
