//! Which hashes the dedupe index (`sqlite_identities.rs`) may hold, kept in memory as a Bloom
//! filter, so that the writer asks the index only about identities it may have seen.
//!
//! Almost every webhook brings identities the store has never seen, and each asked the index:
//! a probe per run, 4-5 µs on the single writer thread, about a sixth of its CPU at saturation.
//! The filter answers "not there" for nearly all of them without reading a page.
//!
//! It never answers "not there" for an entry the index holds that the store still has:
//!
//! - The index's thread is the only one that writes the index. It fills a filter from every
//!   entry of the index's listed runs whose identity the store may still hold (`rebuild`), then
//!   adds each run it appends (`insert`), before it publishes how far the index reaches; the
//!   writer lets go of an identity in memory only after reading that. Merging runs rewrites
//!   entries it already holds.
//! - Until the first filter is built, lookups ask the index. A rebuild that fails leaves the
//!   filter in use, which still holds every entry.
//! - Entries for identities retention deleted stay in the filter until it is rebuilt: they only
//!   cost a probe, and the store has no row for them anyway.
//!
//! The filter is the same size from start-up on: 8 MB (`CAPACITY`, 8 million entries at 8 bits
//! each), so memory does not grow with the identities, the index stays on disk, and nothing
//! rescans the whole index to size it up. A new identity is a false hit in 2.4 % of lookups when
//! the filter is full (measured on random hashes), and in fewer the emptier it is. Once full it
//! is rebuilt only if the store holds at most half as many identities as it has room for
//! (retention keeps the store small), which forgets the ones retention deleted (while that
//! rebuild runs, the new filter takes another 8 MB beside the one in use); otherwise it
//! goes on taking entries, and false hits rise with them (16 % at twice the entries, by the
//! Bloom formula), each costing one probe of the index, as every lookup did before there was a
//! filter.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

/// Filter bits per entry it has room for.
const BITS_PER_ENTRY: usize = 8;
/// Bits set per entry: a false hit in 2.4 % of lookups when full.
const PROBES: u64 = 4;
/// The entries a filter has room for: 8 MB of bits. A power of two.
const CAPACITY: usize = if cfg!(test) { 1 << 11 } else { 1 << 23 };

/// A Bloom filter over the index's 64-bit hashes (a prefix of SHA-256, so already uniform).
pub(super) struct Bloom {
    bits: Vec<AtomicU64>,
    inserted: AtomicUsize,
}

impl Bloom {
    fn empty() -> Self {
        Self {
            bits: (0..CAPACITY * BITS_PER_ENTRY / 64)
                .map(|_| AtomicU64::new(0))
                .collect(),
            inserted: AtomicUsize::new(0),
        }
    }

    /// The bit positions of `hash`: two halves of it, combined (Kirsch and Mitzenmacher).
    fn positions(hash: i64) -> impl Iterator<Item = u64> {
        const MASK: u64 = (CAPACITY * BITS_PER_ENTRY) as u64 - 1;
        let hash = hash as u64;
        let (low, high) = (hash & 0xffff_ffff, (hash >> 32) | 1);
        (0..PROBES).map(move |i| low.wrapping_add(i.wrapping_mul(high)) & MASK)
    }

    pub(super) fn insert(&self, hash: i64) {
        for bit in Self::positions(hash) {
            self.bits[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
        self.inserted.fetch_add(1, Ordering::Relaxed);
    }

    /// False only if `hash` was never inserted.
    pub(super) fn may_hold(&self, hash: i64) -> bool {
        Self::positions(hash).all(|bit| {
            self.bits[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
        })
    }

    #[cfg(test)]
    pub(super) fn size_in_bytes(&self) -> usize {
        self.bits.len() * 8
    }

    /// It holds as many entries as it has room for: false hits grow from here on.
    fn is_full(&self) -> bool {
        self.inserted.load(Ordering::Relaxed) > CAPACITY
    }

    /// It is full, and rebuilt from a store that holds at most `held()` identities (asked only
    /// when full) it would be at most half full. (Beside a store that holds more, a rebuilt
    /// filter would soon be full again, and rebuilding it only scans the whole index.)
    pub(super) fn worth_rebuilding(&self, held: impl FnOnce() -> u64) -> bool {
        self.is_full() && held() <= (CAPACITY / 2) as u64
    }
}

/// The filter the index's thread publishes and the writer reads; none until the first is built.
#[derive(Clone, Default)]
pub(super) struct IndexFilter(Arc<Mutex<Option<Arc<Bloom>>>>);

impl IndexFilter {
    /// False only if the index holds no entry under `hash`.
    pub(super) fn may_hold(&self, hash: i64) -> bool {
        self.current().is_none_or(|bloom| bloom.may_hold(hash))
    }

    /// The filter in use, if one has been built.
    pub(super) fn current(&self) -> Option<Arc<Bloom>> {
        self.0
            .lock()
            .unwrap_or_else(|held| held.into_inner())
            .clone()
    }

    /// Builds a filter from every entry of the index's listed runs with an id from `oldest` on
    /// (the oldest identity the store holds: retention deleted those before it, and new ones
    /// get larger ids) and puts it in use. Runs on the index's thread, which alone writes the
    /// index, so that no run is appended meanwhile. On failure the filter in use, if any, stays
    /// in use: that thread adds every run it appends to it, so it still holds every entry, only
    /// with more false hits. With none in use, lookups ask the index.
    pub(super) fn rebuild(&self, index: &mut Connection, oldest: i64) -> rusqlite::Result<()> {
        let bloom = build(index, oldest)?;
        *self.0.lock().unwrap_or_else(|held| held.into_inner()) = Some(Arc::new(bloom));
        Ok(())
    }
}

fn build(index: &mut Connection, oldest: i64) -> rusqlite::Result<Bloom> {
    let read = index.transaction()?;
    let bloom = Bloom::empty();
    {
        let mut hashes =
            read.prepare("SELECT hash FROM seen WHERE run IN (SELECT run FROM runs) AND id >= ?1")?;
        let mut rows = hashes.query([oldest])?;
        while let Some(row) = rows.next()? {
            bloom.insert(row.get(0)?);
        }
    }
    read.finish()?;
    Ok(bloom)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hashes spread like SHA-256 prefixes, repeatably (SplitMix64).
    fn hashes(seed: u64, n: usize) -> Vec<i64> {
        let mut state = seed;
        (0..n)
            .map(|_| {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                (z ^ (z >> 31)) as i64
            })
            .collect()
    }

    #[test]
    fn every_inserted_hash_is_held_and_few_others_seem_to_be() {
        let bloom = Bloom::empty();
        let inserted = hashes(1, CAPACITY);
        for &hash in &inserted {
            bloom.insert(hash);
        }
        assert!(inserted.iter().all(|&hash| bloom.may_hold(hash)));
        assert!(!bloom.is_full(), "it holds what it has room for");
        let false_hits = hashes(2, 100_000)
            .into_iter()
            .filter(|&hash| bloom.may_hold(hash))
            .count();
        // Full: 8 bits per entry held, 4 probes, about 2.4 %.
        assert!(false_hits < 4_000, "{false_hits} false hits in 100,000");
        bloom.insert(0);
        assert!(bloom.is_full());
    }

    #[test]
    fn a_full_filter_is_rebuilt_only_for_a_store_that_would_leave_it_half_empty() {
        let bloom = Bloom::empty();
        assert_eq!(bloom.size_in_bytes(), CAPACITY * BITS_PER_ENTRY / 8);
        assert!(!bloom.worth_rebuilding(|| 0), "not full");
        let inserted = hashes(4, CAPACITY * 3);
        for &hash in &inserted {
            bloom.insert(hash);
        }
        assert!(bloom.is_full());
        assert!(
            inserted.iter().all(|&hash| bloom.may_hold(hash)),
            "past its room it still holds every entry"
        );
        assert!(
            !bloom.worth_rebuilding(|| CAPACITY as u64 / 2 + 1),
            "it would be more than half full again"
        );
        assert!(bloom.worth_rebuilding(|| CAPACITY as u64 / 2));
        assert!(bloom.worth_rebuilding(|| 0));
    }

    #[test]
    fn a_failed_rebuild_keeps_the_filter_in_use() {
        let filter = IndexFilter::default();
        let mut unreadable = Connection::open_in_memory().unwrap();
        assert!(
            filter.rebuild(&mut unreadable, 0).is_err(),
            "no index tables"
        );
        assert!(
            filter.current().is_none(),
            "none built: lookups ask the index"
        );
        let in_use = Arc::new(Bloom::empty());
        in_use.insert(7);
        *filter.0.lock().unwrap() = Some(in_use.clone());
        assert!(filter.rebuild(&mut unreadable, 0).is_err());
        let after = filter.current().expect("a filter in use");
        assert!(Arc::ptr_eq(&in_use, &after), "the one in use stays");
        assert!(filter.may_hold(7));
    }

    #[test]
    fn an_empty_filter_holds_nothing_and_none_built_may_hold_anything() {
        let bloom = Bloom::empty();
        assert!(
            hashes(3, 1_000)
                .into_iter()
                .all(|hash| !bloom.may_hold(hash))
        );
        assert!(IndexFilter::default().may_hold(42));
    }
}
