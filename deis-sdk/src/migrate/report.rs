//! What a migration did with each v1 key.

use std::fmt;
use std::time::Duration;

/// What became of one v1 key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Status {
    /// Written to the target (with `--dry-run`: would be).
    Migrated,
    /// The target holds it already: nothing to write.
    Unchanged,
    /// Left out on purpose (the reason says why).
    Skipped,
    /// Could not be migrated (the reason says why and what to do).
    Failed,
}

impl Status {
    fn word(self, dry_run: bool) -> &'static str {
        match (self, dry_run) {
            (Self::Migrated, false) => "migrated",
            (Self::Migrated, true) => "would migrate",
            (Self::Unchanged, _) => "unchanged",
            (Self::Skipped, _) => "skipped",
            (Self::Failed, _) => "failed",
        }
    }
}

/// One v1 key's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The v1 key.
    pub key: String,
    /// What became of it.
    pub status: Status,
    /// The target record (migrated, unchanged) or the reason (skipped, failed).
    pub detail: String,
}

/// The outcome of every v1 key, in v1 key order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per key.
    pub outcomes: Vec<Outcome>,
    /// Whether nothing was written.
    pub dry_run: bool,
    /// How long reading, planning and writing took.
    pub elapsed: Duration,
}

impl Report {
    /// How many keys had `status`.
    pub fn count(&self, status: Status) -> usize {
        self.outcomes.iter().filter(|o| o.status == status).count()
    }

    /// The outcome of one v1 key.
    pub fn get(&self, key: &str) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.key == key)
    }

    /// The summary line.
    pub fn summary(&self) -> String {
        let secs = self.elapsed.as_secs_f64();
        format!(
            "{} v1 keys: {} {}, {} unchanged, {} skipped, {} failed in {secs:.2} s ({:.0} keys/s)",
            self.outcomes.len(),
            self.count(Status::Migrated),
            Status::Migrated.word(self.dry_run),
            self.count(Status::Unchanged),
            self.count(Status::Skipped),
            self.count(Status::Failed),
            self.outcomes.len() as f64 / secs.max(1e-9),
        )
    }
}

impl fmt::Display for Report {
    /// One line per key (`migrated  /deis/config/hello/foo -> configs/hello (FOO)`),
    /// then the summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for o in &self.outcomes {
            let sep = if matches!(o.status, Status::Migrated | Status::Unchanged) { " -> " } else { ": " };
            writeln!(f, "{:<13} {}{sep}{}", o.status.word(self.dry_run), o.key, o.detail)?;
        }
        writeln!(f, "{}", self.summary())
    }
}
