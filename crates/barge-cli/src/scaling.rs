//! The scaling model of `barge bench`: forecasts a distributed run (`run --distributed` with
//! `barge worker` processes) on N machines from the sample, and says where adding machines stops
//! helping.
//!
//! Each machine brings its own CPU and connections, so what one machine did at its worker count
//! scales with N. The servers do not: the source's reads and the target's writes are fitted, from
//! the busy time of the readers and writers at each worker count tried, to Amdahl's law
//! `X(n) = λ·n / (1 + σ·(n − 1))` (λ one stream's rate, σ the contention), evaluated at the run's
//! total streams (N × workers); its limit is λ/σ. The network caps each machine (its NIC) and each
//! server (all rows leave the source's NIC and enter the target's). A run goes at the least of
//! these; the binding one is named.

use serde::Serialize;

use crate::bench::Run;

/// Throughput of a server side against concurrent streams, fitted to Amdahl's law.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Curve {
    /// Rows/s of one stream (λ).
    pub single_rows_per_s: f64,
    /// Contention between streams (σ, 0 = none seen).
    pub contention: f64,
    /// The rows/s no number of streams passes (λ/σ); `None` when no contention was seen.
    pub limit_rows_per_s: Option<f64>,
    /// The most streams measured.
    pub measured_up_to: usize,
}

impl Curve {
    /// Rows/s with `streams` concurrent streams.
    pub fn at(&self, streams: f64) -> f64 {
        self.single_rows_per_s * streams / (1.0 + self.contention * (streams - 1.0).max(0.0))
    }
}

/// Fits `(streams, rows/s)` points: λ from the one-stream point (else the fewest streams', taken
/// as linear below), σ by least squares over the others (within 0..=1). `None` without points.
pub fn fit(points: &[(usize, f64)]) -> Option<Curve> {
    let points: Vec<(f64, f64)> =
        points.iter().filter(|(n, x)| *n > 0 && x.is_finite() && *x > 0.0).map(|(n, x)| (*n as f64, *x)).collect();
    let (n0, x0) = points.iter().copied().min_by(|a, b| a.0.total_cmp(&b.0))?;
    let single = x0 / n0;
    let (mut num, mut den) = (0.0, 0.0);
    for (n, x) in points.iter().filter(|(n, _)| *n > 1.0) {
        // λn/X − 1 = σ(n − 1)
        num += (single * n / x - 1.0) * (n - 1.0);
        den += (n - 1.0) * (n - 1.0);
    }
    // (σ above 1 would make more streams slower than one: Amdahl's law stops at 1.)
    let contention = if den > 0.0 { (num / den).clamp(0.0, 1.0) } else { 0.0 };
    Some(Curve {
        single_rows_per_s: single,
        contention,
        limit_rows_per_s: (contention > 1e-9).then(|| single / contention),
        measured_up_to: points.iter().map(|(n, _)| *n as usize).max().unwrap_or(1),
    })
}

/// One machine count's forecast.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScalePoint {
    pub machines: usize,
    pub rows_per_s: f64,
    /// Seconds to copy the tables' estimated rows.
    pub seconds: f64,
    /// What holds it back: `machines` (each machine's own CPU and connections: scaling),
    /// `source reads`, `target writes`, `machine network`, `source network`, `target network`.
    pub bound_by: String,
}

/// The model and its forecasts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScalingModel {
    /// Workers per machine (`barge worker --workers`): the best count tried.
    pub workers_per_machine: usize,
    /// What one machine did with them.
    pub machine_rows_per_s: f64,
    pub bytes_per_row: f64,
    pub source_reads: Option<Curve>,
    pub target_writes: Option<Curve>,
    /// Each NIC's bandwidth assumed (`--network-mb-per-s`), MB/s each way.
    pub network_mb_per_s: f64,
    /// Rows forecast (the tables' estimates).
    pub rows: u64,
    pub points: Vec<ScalePoint>,
    /// The machine count past which one more machine adds less than 5%, and why; `None` when it
    /// still scales at [`MOST_MACHINES`].
    pub stops_scaling_at: Option<usize>,
    pub stops_because: Option<String>,
}

/// The most machines the model looks at for where scaling stops.
pub const MOST_MACHINES: usize = 256;

/// Rows per second a side achieves with `workers` streams: rows over its busy seconds per stream.
fn side_rate(run: &Run, busy: impl Fn(&barge_exec::StageSeconds) -> f64) -> Option<(usize, f64)> {
    let rows: u64 = run.tables.iter().map(|t| t.rows).sum();
    let busy: f64 = run.tables.iter().map(|t| busy(&t.stages)).sum();
    (rows > 0 && busy > 0.0).then(|| (run.workers, rows as f64 * run.workers as f64 / busy))
}

/// The model from the bench's runs (one per worker count), for `rows` rows, forecast at
/// `machines`; `None` without a run that copied rows.
pub fn model(runs: &[Run], rows: u64, machines: &[usize], network_mb_per_s: f64) -> Option<ScalingModel> {
    let best = runs
        .iter()
        .filter(|r| r.rows > 0 && r.rows_per_s > 0.0)
        .max_by(|a, b| a.rows_per_s.total_cmp(&b.rows_per_s))?;
    let bytes: f64 = best.tables.iter().map(|t| t.mb_per_s * 1e6 * t.seconds).sum();
    let bytes_per_row = bytes / best.rows.max(1) as f64;
    let reads: Vec<(usize, f64)> = runs.iter().filter_map(|r| side_rate(r, |s| s.read)).collect();
    let writes: Vec<(usize, f64)> = runs.iter().filter_map(|r| side_rate(r, |s| s.write)).collect();
    let mut model = ScalingModel {
        workers_per_machine: best.workers,
        machine_rows_per_s: best.rows_per_s,
        bytes_per_row,
        source_reads: fit(&reads),
        target_writes: fit(&writes),
        network_mb_per_s,
        rows,
        points: Vec::new(),
        stops_scaling_at: None,
        stops_because: None,
    };
    model.points = machines.iter().filter(|n| **n > 0).map(|n| model.at(*n)).collect();
    let mut previous = model.at(1);
    for n in 2..=MOST_MACHINES {
        let next = model.at(n);
        if next.rows_per_s < previous.rows_per_s * 1.05 {
            model.stops_scaling_at = Some(n - 1);
            model.stops_because = Some(next.bound_by.clone());
            break;
        }
        previous = next;
    }
    Some(model)
}

impl ScalingModel {
    /// The forecast on `machines` machines.
    pub fn at(&self, machines: usize) -> ScalePoint {
        let n = machines as f64;
        let streams = n * self.workers_per_machine as f64;
        let nic_rows =
            if self.bytes_per_row > 0.0 { self.network_mb_per_s * 1e6 / self.bytes_per_row } else { f64::INFINITY };
        let mut bounds = vec![("machines", n * self.machine_rows_per_s)];
        if let Some(curve) = &self.source_reads {
            bounds.push(("source reads", curve.at(streams)));
        }
        if let Some(curve) = &self.target_writes {
            bounds.push(("target writes", curve.at(streams)));
        }
        // Each machine's NIC carries its rows in (reads) and out (writes); the servers' carry all.
        bounds.push(("machine network", n * nic_rows));
        bounds.push(("source network", nic_rows));
        bounds.push(("target network", nic_rows));
        let (bound_by, rows_per_s) = bounds.into_iter().min_by(|a, b| a.1.total_cmp(&b.1)).expect("at least one bound");
        ScalePoint {
            machines,
            rows_per_s,
            seconds: if rows_per_s > 0.0 { self.rows as f64 / rows_per_s } else { f64::INFINITY },
            bound_by: bound_by.to_string(),
        }
    }
}

/// The model as `barge bench` prints it.
pub fn render(model: &ScalingModel) -> String {
    let curve = |name: &str, curve: &Option<Curve>| match curve {
        Some(Curve { limit_rows_per_s: Some(limit), single_rows_per_s, measured_up_to, .. }) => format!(
            "{name}: {single_rows_per_s:.0} rows/s per stream, limit ~{limit:.0} rows/s (fitted up to {measured_up_to} streams)"
        ),
        Some(Curve { single_rows_per_s, measured_up_to, .. }) => format!(
            "{name}: {single_rows_per_s:.0} rows/s per stream, no contention seen up to {measured_up_to} streams"
        ),
        None => format!("{name}: not measured"),
    };
    let mut out = format!(
        "scaling model (barge worker --workers {} per machine, {:.0} rows/s on this one, {:.0} bytes/row, NICs of {:.0} MB/s):\n  {}\n  {}\n",
        model.workers_per_machine,
        model.machine_rows_per_s,
        model.bytes_per_row,
        model.network_mb_per_s,
        curve("source reads", &model.source_reads),
        curve("target writes", &model.target_writes),
    );
    out.push_str(&format!("  {:>8} {:>12} {:>10}  bound by\n", "machines", "rows/s", "time"));
    for p in &model.points {
        out.push_str(&format!("  {:>8} {:>12.0} {:>9.1}s  {}\n", p.machines, p.rows_per_s, p.seconds, p.bound_by));
    }
    out.push_str(&match (&model.stops_scaling_at, &model.stops_because) {
        (Some(n), Some(why)) => format!("  stops scaling at ~{n} machine(s): then bound by {why}"),
        _ => format!("  still scaling at {MOST_MACHINES} machines"),
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_fit_recovers_one_streams_rate_and_the_contention() {
        let truth = Curve { single_rows_per_s: 1000.0, contention: 0.1, limit_rows_per_s: None, measured_up_to: 0 };
        let points: Vec<(usize, f64)> = [1, 2, 4, 8].iter().map(|n| (*n, truth.at(*n as f64))).collect();
        let fitted = fit(&points).unwrap();
        assert!((fitted.single_rows_per_s - 1000.0).abs() < 1e-6);
        assert!((fitted.contention - 0.1).abs() < 1e-9);
        assert!((fitted.limit_rows_per_s.unwrap() - 10_000.0).abs() < 1e-3);
        assert_eq!(fitted.measured_up_to, 8);
        // Linear scaling: no limit.
        let linear = fit(&[(1, 500.0), (2, 1000.0), (4, 2000.0)]).unwrap();
        assert_eq!(linear.limit_rows_per_s, None);
        assert!(fit(&[]).is_none());
    }

    fn run(workers: usize, rows: u64, seconds: f64, read: f64, write: f64) -> Run {
        let stages = barge_exec::StageSeconds { read, cpu: 0.0, write, verify: 0.0 };
        Run {
            workers,
            seconds,
            rows,
            rows_per_s: rows as f64 / seconds,
            peak_rss_mb: None,
            tables: vec![crate::bench::TableRun {
                table: "t".into(),
                rows,
                seconds,
                rows_per_s: rows as f64 / seconds,
                mb_per_s: rows as f64 * 100.0 / 1e6 / seconds,
                stages,
                bottleneck: "write".into(),
                timeline: Vec::new(),
                verify_timeline: Vec::new(),
            }],
        }
    }

    #[test]
    fn machines_scale_until_the_targets_writes_bind() {
        // Writes: 1 stream 100k rows/s; 2 streams 150k rows/s → σ = 1/3, limit 300k rows/s.
        let runs = [run(1, 100_000, 1.0, 0.2, 1.0), run(2, 150_000, 1.0, 0.2, 2.0)];
        let model = model(&runs, 30_000_000, &[1, 2, 4, 8], 1250.0).unwrap();
        assert_eq!(model.workers_per_machine, 2);
        assert!((model.bytes_per_row - 100.0).abs() < 1e-6);
        let limit = model.target_writes.as_ref().unwrap().limit_rows_per_s.unwrap();
        assert!((limit - 300_000.0).abs() < 1.0, "{limit}");
        assert_eq!(model.points[0].bound_by, "machines");
        assert_eq!(model.points[3].bound_by, "target writes");
        assert!(model.points.windows(2).all(|w| w[1].rows_per_s >= w[0].rows_per_s));
        assert_eq!(model.stops_because.as_deref(), Some("target writes"));
        let text = render(&model);
        assert!(text.contains("stops scaling at ~") && text.contains("target writes"), "{text}");
    }

    #[test]
    fn wide_rows_are_bound_by_the_servers_network() {
        // 1 MB rows, no contention seen: one machine does 1000 rows/s, two would do 2000 but the
        // source's NIC passes 1250.
        let mut r = run(1, 1000, 1.0, 0.5, 0.5);
        r.tables[0].mb_per_s = 1000.0;
        let model = model(&[r], 1_000_000, &[1, 4], 1250.0).unwrap();
        assert_eq!(model.points[1].bound_by, "source network");
        assert_eq!(model.points[0].bound_by, "machines");
        assert_eq!(model.stops_scaling_at, Some(2));
    }

    proptest! {
        #[test]
        fn more_machines_never_forecast_less(
            single in 1.0f64..1e6, contention in 0.0f64..=1.0, workers in 1usize..16, machine in 1.0f64..1e6,
            bytes in 1.0f64..1e6,
        ) {
            let curve = Curve { single_rows_per_s: single, contention, limit_rows_per_s: None, measured_up_to: 1 };
            let model = ScalingModel {
                workers_per_machine: workers,
                machine_rows_per_s: machine,
                bytes_per_row: bytes,
                source_reads: Some(curve.clone()),
                target_writes: Some(curve),
                network_mb_per_s: 1250.0,
                rows: 1_000_000,
                points: Vec::new(),
                stops_scaling_at: None,
                stops_because: None,
            };
            let mut last = 0.0;
            for n in 1..40 {
                let p = model.at(n);
                prop_assert!(p.rows_per_s + 1e-6 >= last);
                prop_assert!(p.rows_per_s <= machine * n as f64 + 1e-6);
                last = p.rows_per_s;
            }
        }
    }
}
