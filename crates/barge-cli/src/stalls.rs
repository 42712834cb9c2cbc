//! Stall reports of a single-process `copy` or `run`: a table whose copy makes no progress for
//! `--stall-after` seconds is named on stderr with what its writers' target sessions wait on, as
//! the server says, and who holds it (as the coordinator of a distributed run reports its stalled
//! ranges).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use barge_exec::{Phase, Progress};

/// The target sessions a run's writers opened: a fence that only records them.
#[derive(Debug, Default)]
pub struct Sessions(Mutex<Vec<String>>);

impl barge_exec::Fence for Sessions {
    fn writer_opened(&self, session: Option<String>) -> barge_core::Result<()> {
        if let Some(session) = session {
            self.0.lock().expect("sessions lock").push(session);
        }
        Ok(())
    }

    fn still_held(&self) -> barge_core::Result<()> {
        Ok(())
    }
}

/// Progress passed through, with when each table copying last moved.
struct Timed<'a> {
    inner: &'a dyn Progress,
    /// Table → (when its rows last moved, whether its stall was reported).
    moved: Mutex<HashMap<String, (Instant, bool)>>,
}

impl Progress for Timed<'_> {
    fn started(&self, table: &str, phase: Phase, total_rows: u64) {
        if phase == Phase::Copy {
            self.moved.lock().expect("moved lock").insert(table.to_string(), (Instant::now(), false));
        }
        self.inner.started(table, phase, total_rows);
    }

    fn advance(&self, table: &str, phase: Phase, rows: u64) {
        if phase == Phase::Copy
            && let Some(moved) = self.moved.lock().expect("moved lock").get_mut(table)
        {
            *moved = (Instant::now(), false);
        }
        self.inner.advance(table, phase, rows);
    }

    fn finished(&self, table: &str, phase: Phase, summary: &str) {
        if phase == Phase::Copy {
            self.moved.lock().expect("moved lock").remove(table);
        }
        self.inner.finished(table, phase, summary);
    }
}

/// Runs `run` with `progress` watched: each table copying that made no progress for
/// `stall_after` seconds is reported once (again after it moves and stops again), with what
/// the sessions in `sessions` wait on in `target`.
pub fn watching<T>(
    target: &dyn barge_core::Target,
    sessions: &Sessions,
    stall_after: f64,
    progress: &dyn Progress,
    run: impl FnOnce(&dyn Progress) -> T,
) -> T {
    let timed = Timed { inner: progress, moved: Mutex::new(HashMap::new()) };
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(200));
                let stalled: Vec<(String, f64)> = {
                    let mut moved = timed.moved.lock().expect("moved lock");
                    moved
                        .iter_mut()
                        .filter(|(_, (at, said))| !*said && at.elapsed().as_secs_f64() >= stall_after)
                        .map(|(table, (at, said))| {
                            *said = true;
                            (table.clone(), at.elapsed().as_secs_f64())
                        })
                        .collect()
                };
                for (table, idle) in stalled {
                    let ids = sessions.0.lock().expect("sessions lock").clone();
                    let waits = target.session_waits(&ids).unwrap_or_else(|e| vec![format!("({e})")]);
                    let waits = if waits.is_empty() { String::new() } else { format!("; {}", waits.join("; ")) };
                    eprintln!("warning: table `{table}`: no progress for {idle:.0} s{waits}");
                }
            }
        });
        let out = run(&timed);
        done.store(true, Ordering::SeqCst);
        out
    })
}

/// The fence of a watched run.
pub fn sessions() -> Arc<Sessions> {
    Arc::new(Sessions::default())
}
