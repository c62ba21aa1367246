//! What this process did, shown by phpinfo().

/// Counts since the process started (a php-fpm worker serves many requests).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub reads_by_server: Vec<(String, u64)>,
    pub failovers: u64,
    /// Misses on a cold server that were asked of the next one.
    pub cold_misses: u64,
    pub read_repairs: u64,
    /// Misses on a server not known complete that no other server could
    /// confirm: the read failed rather than start an empty session.
    pub unconfirmed_misses: u64,
    /// Hits on a server not known complete, checked on the next server;
    /// and of those, the ones where a later server held a newer session.
    pub checked_hits: u64,
    pub stale_hits: u64,
    /// Writes that began from a miss and found a live session: not stored.
    pub conflicts: u64,
    /// Sessions found only under the other handler's key
    /// (`memcast.migrate_from`), read as the oldest version.
    pub migrated_reads: u64,
    /// Sealed values that did not open (altered, moved, or under a key no
    /// longer accepted): misses, never handed to PHP.
    pub unopened: u64,
    pub writes: u64,
    pub write_failures: u64,
    pub published: u64,
    pub publish_drops: u64,
    /// Sessions sent again (as stored now) after their frame was dropped.
    pub resent: u64,
    /// Dropped frames not remembered for sending again (over
    /// [`crate::publish::MAX_UNSENT`]).
    pub unsent_forgotten: u64,
    pub lock_waits: u64,
    pub lock_failures: u64,
    pub lock_wait_ms_total: u64,
    pub lock_wait_ms_max: u64,
    /// Reads under a cluster-wide lock that found this host's copy older
    /// than the last write made under the lock, and read that write.
    pub lock_catch_ups: u64,
    /// Of those, the ones whose write was found nowhere in time (lost).
    pub lock_writes_not_found: u64,
}

impl Counters {
    /// One read answered by the server at `index`.
    pub(crate) fn count_read(&mut self, index: usize) {
        if let Some(r) = self.reads_by_server.get_mut(index) {
            r.1 += 1;
        }
    }
}
