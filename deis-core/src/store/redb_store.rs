//! [`RedbStore`]: the embedded default [`Store`](super::Store) on a redb file.
// Implemented by the store helper.

/// The embedded store.
#[derive(Debug)]
pub struct RedbStore {}
