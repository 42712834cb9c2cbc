//! Transient failures of ranges: which ranges of a pass failed, and the backoff before the next.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use barge_core::Error;

/// Retries of a range that fails transiently, unless told otherwise.
pub const DEFAULT_RETRIES: u32 = 3;

/// First delay before a retry; doubled for each further attempt, up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(250);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(15);

/// The delay before retry `attempt` (1-based).
pub(crate) fn backoff(attempt: u32) -> Duration {
    (FIRST_RETRY_DELAY * 2u32.saturating_pow(attempt.saturating_sub(1))).min(MAX_RETRY_DELAY)
}

/// Runs `step` (one piece of a table's work outside the stages: clearing ranges, building the key),
/// doing it again after a backoff while it fails transiently, up to `retries` times.
pub(crate) fn retrying<T>(
    retries: u32,
    table: &str,
    what: &str,
    mut step: impl FnMut() -> Result<T, Error>,
) -> Result<T, Error> {
    let mut attempt = 0;
    loop {
        match step() {
            Err(error) if error.is_transient() && attempt < retries => {
                attempt += 1;
                let delay = backoff(attempt);
                tracing::warn!(
                    "table `{table}`: {what} failed ({error}); retry {attempt} of {retries} in {:.2}s",
                    delay.as_secs_f64()
                );
                std::thread::sleep(delay);
            }
            other => return other,
        }
    }
}

/// Ranges whose attempt failed transiently in a pass, and the last such error.
#[derive(Default)]
pub(crate) struct Transient {
    failed: Mutex<(BTreeSet<usize>, Option<Error>)>,
}

impl Transient {
    pub(crate) fn fail(&self, ranges: impl IntoIterator<Item = usize>, error: Error) {
        let mut failed = self.failed.lock().expect("transient lock");
        failed.0.extend(ranges);
        failed.1 = Some(error);
    }

    pub(crate) fn contains(&self, range: usize) -> bool {
        self.failed.lock().expect("transient lock").0.contains(&range)
    }

    /// The failed ranges and the last error, if any range failed.
    pub(crate) fn into_failed(self) -> Option<(BTreeSet<usize>, Error)> {
        let (failed, error) = self.failed.into_inner().expect("transient lock");
        error.filter(|_| !failed.is_empty()).map(|error| (failed, error))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_a_quarter_second_up_to_fifteen() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(3), Duration::from_secs(1));
        assert_eq!(backoff(30), MAX_RETRY_DELAY);
    }
}
