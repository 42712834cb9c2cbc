//! `barge bench`: sampled runs per worker count in a scratch place it removes, a report whose
//! figures are the JSON's, and cleanup when interrupted.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn bench_on_sqlite_samples_reports_and_removes_its_scratch_file() {
    let dir = Dir::new();
    let demo = dir.path("demo");
    barge(&["demo", "--rows", "60000", "--dir", &demo.display().to_string(), "--json"]).assert_code(0);
    let (from, to) = (format!("sqlite://{}/source.db", demo.display()), dir.url("target.db"));
    let report = dir.path("report");
    let run = barge(&[
        "bench",
        "--from",
        &from,
        "--to",
        &to,
        "--table",
        "orders",
        "--sample-rows",
        "10000",
        "--workers",
        "1,2",
        "--report",
        &report.display().to_string(),
        "--json",
    ]);
    run.assert_code(0);
    let json = run.json();
    let runs = json["runs"].as_array().unwrap();
    assert_eq!(runs.iter().map(|r| r["workers"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2]);
    for r in runs {
        let orders = &r["tables"][0];
        // Whole ranges of the 64 planned (~940 rows each) until about 10,000 rows.
        let rows = orders["rows"].as_u64().unwrap();
        assert!((9_000..=12_000).contains(&rows), "{orders}");
        assert!(orders["rows_per_s"].as_f64().unwrap() > 0.0);
        assert!(["read", "transform+hash", "write", "verify"].contains(&orders["bottleneck"].as_str().unwrap()));
        assert!(r["peak_rss_mb"].as_f64().unwrap() > 1.0);
        // The timeline starts at nothing, never goes back, and ends with every row written.
        let timeline: Vec<(f64, u64)> = serde_json::from_value(orders["timeline"].clone()).unwrap();
        assert_eq!(timeline.first(), Some(&(0.0, 0)), "{orders}");
        assert!(timeline.windows(2).all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1), "{timeline:?}");
        assert_eq!(timeline.last().unwrap().1, rows, "{timeline:?}");
        assert!(timeline.last().unwrap().0 <= orders["seconds"].as_f64().unwrap());
        // The verification digested the target's rows (the source's were digested while copying).
        let verified: Vec<(f64, u64)> = serde_json::from_value(orders["verify_timeline"].clone()).unwrap();
        assert_eq!(verified.last().unwrap().1, rows, "{verified:?}");
    }
    let forecast = &json["forecasts"][0];
    assert_eq!(forecast["estimated_rows"], 60000);
    let rate = forecast["rows_per_s"].as_f64().unwrap();
    assert!((forecast["forecast_seconds"].as_f64().unwrap() - 60000.0 / rate).abs() < 1e-6);
    // The report files hold the same figures.
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("report.json")).unwrap()).unwrap();
    assert_eq!(written, json);
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(
        html.contains("<svg") && html.contains(&format!("{:.0}", runs[0]["tables"][0]["rows_per_s"].as_f64().unwrap()))
    );
    assert!(html.contains("rows/s over time") && html.contains("orders @ 2 worker(s)"), "the timeline chart");
    assert!(std::fs::read_to_string(report.join("throughput.svg")).unwrap().starts_with("<svg"));
    // Nothing left behind: no scratch file, no target.
    let left: Vec<_> = std::fs::read_dir(dir.path("")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(!left.iter().any(|n| n.to_string_lossy().starts_with("barge_scratch")), "{left:?}");
}

#[test]
fn a_sample_in_seconds_is_sized_by_a_calibration_run() {
    let dir = Dir::new();
    let demo = dir.path("demo");
    barge(&["demo", "--rows", "100000", "--dir", &demo.display().to_string(), "--json"]).assert_code(0);
    let from = format!("sqlite://{}/source.db", demo.display());
    let run = barge(&[
        "bench",
        "--from",
        &from,
        "--to",
        &dir.url("t.db"),
        "--table",
        "orders",
        "--sample-seconds",
        "0.3",
        "--workers",
        "1",
        "--json",
    ]);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["sample_seconds"], 0.3);
    let sampled = json["sample_rows"].as_u64().unwrap();
    assert!(sampled >= 20_000, "at least the calibration's size: {json}");
    // Whole ranges up to about the sized sample (never more than the table).
    let rows = json["runs"][0]["tables"][0]["rows"].as_u64().unwrap();
    assert!(rows <= 100_000 && rows + 2_000 >= sampled.min(100_000), "{rows} rows for a sample of {sampled}");
    let run = barge(&["bench", "--from", &from, "--to", &dir.url("t.db"), "--sample-seconds", "0"]);
    run.assert_code(2);
    let run =
        barge(&["bench", "--from", &from, "--to", &dir.url("t.db"), "--sample-seconds", "1", "--sample-rows", "5"]);
    run.assert_code(2);
}

#[test]
fn bench_on_postgres_drops_its_scratch_schema_even_when_interrupted() {
    let (src, dst) = (PgDb::new("benchsrc"), PgDb::new("benchdst"));
    src.sql(
        "CREATE TABLE t (id bigint PRIMARY KEY, v text NOT NULL);
         INSERT INTO t SELECT g, 'value ' || g FROM generate_series(1, 400000) g; ANALYZE t;",
    );
    let scratch_schemas =
        || dst.sql("SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'barge_scratch%'")[0][0].clone().unwrap();
    let run = barge(&[
        "bench",
        "--from",
        &src.url(),
        "--to",
        &dst.url(),
        "--sample-rows",
        "20000",
        "--workers",
        "1,2",
        "--machines",
        "1,4,64",
        "--network-mb-per-s",
        "1000",
        "--json",
    ]);
    run.assert_code(0);
    let json = run.json();
    assert_eq!(json["runs"].as_array().unwrap().len(), 2);
    assert!(json["forecast_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(scratch_schemas(), "0");
    // The scaling model: one machine is what the best run did; more never forecast less; each
    // forecast is the estimated rows at its rate; the servers' curves fitted from 1 and 2 streams.
    let model = &json["scaling"];
    let best = json["runs"].as_array().unwrap().iter().map(|r| r["rows_per_s"].as_f64().unwrap()).fold(0.0, f64::max);
    assert!((model["machine_rows_per_s"].as_f64().unwrap() - best).abs() < 1e-6, "{model}");
    assert_eq!(model["network_mb_per_s"], 1000.0);
    assert_eq!(model["rows"], json["forecasts"][0]["estimated_rows"]);
    let points = model["points"].as_array().unwrap();
    assert_eq!(points.iter().map(|p| p["machines"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 4, 64]);
    assert_eq!(points[0]["bound_by"], "machines", "{model}");
    assert!((points[0]["rows_per_s"].as_f64().unwrap() - best).abs() < 1e-6, "{model}");
    let rates: Vec<f64> = points.iter().map(|p| p["rows_per_s"].as_f64().unwrap()).collect();
    assert!(rates.windows(2).all(|w| w[1] >= w[0]), "{model}");
    for p in points {
        let expected = model["rows"].as_f64().unwrap() / p["rows_per_s"].as_f64().unwrap();
        assert!((p["seconds"].as_f64().unwrap() - expected).abs() < 1e-6, "{p}");
    }
    for side in ["source_reads", "target_writes"] {
        assert_eq!(model[side]["measured_up_to"], 2, "{model}");
        assert!(model[side]["single_rows_per_s"].as_f64().unwrap() > 0.0, "{model}");
    }
    let run = barge(&["bench", "--from", &src.url(), "--to", &dst.url(), "--machines", "0,2"]);
    run.assert_code(2);
    // Interrupted (SIGINT, as Ctrl-C sends) while a run is loading: the scratch schema goes too.
    let child = Command::new(env!("CARGO_BIN_EXE_barge"))
        .args(["bench", "--from", &src.url(), "--to", &dst.url(), "--sample-rows", "400000", "--workers", "1,1,1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while scratch_schemas() == "0" && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("interrupted"));
    assert_eq!(scratch_schemas(), "0");
}

/// `--generate` builds the same rows in every engine: verification across engines matches.
#[test]
fn generated_tables_are_identical_in_every_engine() {
    let (dir, pg, my) = (Dir::new(), PgDb::new("generate"), MyDb::new("generate"));
    for to in [dir.url("gen.db"), pg.url(), my.url()] {
        let run = barge(&["bench", "--generate", "orders,events,wide", "--rows", "3000", "--to", &to, "--json"]);
        run.assert_code(0);
        assert_eq!(run.stdout.lines().count(), 3, "{}", run.stdout);
    }
    assert_eq!(dir.count("gen.db", "wide"), 3000);
    let columns: i64 =
        dir.conn("gen.db").query_row("SELECT count(*) FROM pragma_table_info('wide')", [], |r| r.get(0)).unwrap();
    assert_eq!(columns, 50);
    for to in [pg.url(), my.url()] {
        let run = barge(&["verify", "--from", &dir.url("gen.db"), "--to", &to, "--json"]);
        run.assert_code(0);
        assert_eq!(run.json()["tables"].as_array().unwrap().len(), 3);
    }
    let run = barge(&["bench", "--generate", "nope", "--to", &dir.url("gen.db")]);
    run.assert_code(2);
    assert!(run.stderr.contains("unknown synthetic table `nope` (known: orders, events, wide)"), "{}", run.stderr);
}
