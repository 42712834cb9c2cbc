//! How many ranges a PostgreSQL state store hands out per second: RANGES queued, then THREADS
//! workers (each with its own store connection, as worker processes have) claim and complete them
//! as fast as they can, each claim and each completion one transaction, as `barge worker` does.
//! Prints `claims_per_s=…`. Arguments: STATE_URL RANGES THREADS (cargo passes `--bench` first).

use std::sync::Arc;
use std::time::Instant;

use barge_core::ledger::{LedgerStore, PieceOf, RangeDone, WorkItem};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let [url, ranges, threads] = args.as_slice() else {
        eprintln!("usage: queue_claims STATE_URL RANGES THREADS");
        std::process::exit(2);
    };
    let (ranges, threads): (usize, usize) = (ranges.parse().expect("RANGES"), threads.parse().expect("THREADS"));
    let run = format!("claims-bench-{}", std::process::id());
    let store = barge_postgres::ledger::PgLedger::open(url).expect("the state store");
    let items: Vec<WorkItem> = (0..ranges)
        .map(|i| WorkItem {
            table: "t".into(),
            range: i,
            estimated_rows: (i % 97) as u64,
            lo: "null".into(),
            hi: "null".into(),
        })
        .collect();
    store.work_queue().expect("a queue").enqueue(&run, &items).expect("enqueue");
    let stores: Vec<Arc<dyn LedgerStore>> = (0..threads)
        .map(|_| {
            Arc::new(barge_postgres::ledger::PgLedger::open(url).expect("the state store")) as Arc<dyn LedgerStore>
        })
        .collect();
    let started = Instant::now();
    let claimed: usize = std::thread::scope(|scope| {
        let handles: Vec<_> = stores
            .iter()
            .enumerate()
            .map(|(i, store)| {
                let run = &run;
                scope.spawn(move || {
                    let queue = store.work_queue().expect("a queue");
                    let worker = format!("w{i}");
                    let mut n = 0;
                    while let Some(claim) = queue.claim(run, &worker, 30.0).expect("claim") {
                        let done = RangeDone {
                            range: claim.range,
                            rows_read: 1,
                            rows_written: 1,
                            rows_rejected: 0,
                            digests: "[]".into(),
                        };
                        let piece = PieceOf { table: &claim.table, range: claim.range, piece: claim.piece };
                        let merge = |parts: &[RangeDone]| Ok(parts[0].clone());
                        assert!(queue.complete(run, &worker, piece, &done, &merge).expect("complete"));
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("a thread")).sum()
    });
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(claimed, ranges, "every range claimed once");
    store.work_queue().expect("a queue").drop_queue(&run).expect("drop");
    println!("claims_ranges={ranges}");
    println!("claims_threads={threads}");
    println!("claims_seconds={seconds:.3}");
    println!("claims_per_s={:.0}", ranges as f64 / seconds);
}
