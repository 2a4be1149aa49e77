//! Which hashes the dedupe index (`sqlite_identities.rs`) may hold, kept in memory as a Bloom
//! filter, so that the writer asks the index only about identities it may have seen.
//!
//! Almost every webhook brings identities the store has never seen, and each asked the index:
//! a probe per run, 4-5 µs on the single writer thread, about a sixth of its CPU at saturation.
//! The filter answers "not there" for nearly all of them without reading a page.
//!
//! It never answers "not there" for an entry the index holds:
//!
//! - The index's thread is the only one that writes the index. It fills a filter from every
//!   entry of the index's listed runs (`rebuild`), then adds each run it appends (`insert`),
//!   before it publishes how far the index reaches; the writer lets go of an identity in memory
//!   only after reading that. Merging runs rewrites entries it already holds.
//! - Until the first filter is built, and whenever one cannot be, lookups ask the index.
//! - Entries the index drops (retention) stay in the filter: they only cost a probe, and a
//!   rebuild forgets them.
//!
//! A filter is sized for twice the entries it starts with, rounded up to a power of two, and
//! rebuilt from the index once it holds as many entries as it was sized for, which about
//! quadruples it. So it keeps 8-32 bits (1-4 bytes) per identity, and a new identity is a false
//! hit in 0.02 % of lookups just after a rebuild and 2.4 % when the filter is full (measured on
//! a million random hashes).
//!
//! It grows no larger than 8 MB (`MAX_CAPACITY`, 8 million entries at 8 bits), whatever the
//! retention keeps: the index stays on disk, and RSS stays bounded. Beyond that it is no longer
//! rebuilt, which would only scan the whole index again for the same size; it goes on taking
//! entries, and false hits rise with them (16 % at twice the entries, by the Bloom formula), each
//! costing one probe of the index, as every lookup did before there was a filter.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

/// Filter bits per entry it is sized for (it is sized for twice what it starts with).
const BITS_PER_ENTRY: usize = 8;
/// Bits set per entry: a false hit in 0.02 % of lookups at 32 bits per entry held, 2.4 % at 8.
const PROBES: u64 = 4;
/// The fewest entries a filter is sized for.
const MIN_CAPACITY: usize = if cfg!(test) { 64 } else { 1 << 16 };
/// The most entries a filter is sized for: 8 MB of bits. A power of two.
const MAX_CAPACITY: usize = if cfg!(test) { 1 << 11 } else { 1 << 23 };

/// A Bloom filter over the index's 64-bit hashes (a prefix of SHA-256, so already uniform).
pub(super) struct Bloom {
    bits: Vec<AtomicU64>,
    /// Bit positions run from 0 to `mask`.
    mask: u64,
    capacity: usize,
    inserted: AtomicUsize,
}

impl Bloom {
    /// An empty filter for `entries`, with room for at least as many again, up to
    /// `MAX_CAPACITY`.
    fn for_entries(entries: usize) -> Self {
        let capacity = entries
            .saturating_mul(2)
            .clamp(MIN_CAPACITY, MAX_CAPACITY)
            .next_power_of_two();
        let bits = capacity * BITS_PER_ENTRY;
        Self {
            bits: (0..bits / 64).map(|_| AtomicU64::new(0)).collect(),
            mask: bits as u64 - 1,
            capacity,
            inserted: AtomicUsize::new(0),
        }
    }

    /// The bit positions of `hash`: two halves of it, combined (Kirsch and Mitzenmacher).
    fn positions(&self, hash: i64) -> impl Iterator<Item = u64> + '_ {
        let hash = hash as u64;
        let (low, high) = (hash & 0xffff_ffff, (hash >> 32) | 1);
        (0..PROBES).map(move |i| low.wrapping_add(i.wrapping_mul(high)) & self.mask)
    }

    pub(super) fn insert(&self, hash: i64) {
        for bit in self.positions(hash) {
            self.bits[(bit / 64) as usize].fetch_or(1 << (bit % 64), Ordering::Relaxed);
        }
        self.inserted.fetch_add(1, Ordering::Relaxed);
    }

    /// False only if `hash` was never inserted.
    pub(super) fn may_hold(&self, hash: i64) -> bool {
        self.positions(hash).all(|bit| {
            self.bits[(bit / 64) as usize].load(Ordering::Relaxed) & (1 << (bit % 64)) != 0
        })
    }

    #[cfg(test)]
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// It holds as many entries as it was sized for: false hits grow from here on.
    fn is_full(&self) -> bool {
        self.inserted.load(Ordering::Relaxed) > self.capacity
    }

    /// It is full, and a rebuild would size it larger.
    pub(super) fn outgrown(&self) -> bool {
        self.is_full() && self.capacity < MAX_CAPACITY
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

    /// Builds a filter from every entry of the index's listed runs and puts it in use. Runs on
    /// the index's thread, which alone writes the index, so that no run is appended meanwhile.
    /// On failure no filter is in use (lookups ask the index, as before the first): the one
    /// before would miss the runs appended from now on.
    pub(super) fn rebuild(&self, index: &mut Connection) -> rusqlite::Result<()> {
        let built = build(index);
        let mut in_use = self.0.lock().unwrap_or_else(|held| held.into_inner());
        match built {
            Ok(bloom) => {
                *in_use = Some(Arc::new(bloom));
                Ok(())
            }
            Err(e) => {
                *in_use = None;
                Err(e)
            }
        }
    }
}

fn build(index: &mut Connection) -> rusqlite::Result<Bloom> {
    let read = index.transaction()?;
    let entries: i64 =
        read.query_row("SELECT COALESCE(SUM(size), 0) FROM runs", [], |r| r.get(0))?;
    let bloom = Bloom::for_entries(usize::try_from(entries).unwrap_or(0));
    {
        let mut hashes =
            read.prepare("SELECT hash FROM seen WHERE run IN (SELECT run FROM runs)")?;
        let mut rows = hashes.query([])?;
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
        let bloom = Bloom::for_entries(300);
        assert_eq!(
            bloom.capacity, 1_024,
            "twice the entries, to a power of two"
        );
        let inserted = hashes(1, bloom.capacity);
        for &hash in &inserted {
            bloom.insert(hash);
        }
        assert!(inserted.iter().all(|&hash| bloom.may_hold(hash)));
        assert!(!bloom.is_full(), "it holds what it was sized for");
        let false_hits = hashes(2, 100_000)
            .into_iter()
            .filter(|&hash| bloom.may_hold(hash))
            .count();
        // Full: 8 bits per entry held, 4 probes, about 2.4 %.
        assert!(false_hits < 4_000, "{false_hits} false hits in 100,000");
        bloom.insert(0);
        assert!(bloom.is_full());
        assert!(bloom.outgrown(), "a rebuild would size it larger");
    }

    #[test]
    fn a_filter_grows_no_larger_than_its_most_and_is_then_not_outgrown() {
        let bloom = Bloom::for_entries(MAX_CAPACITY * 3);
        assert_eq!(bloom.capacity, MAX_CAPACITY);
        assert_eq!(bloom.bits.len() * 64, MAX_CAPACITY * BITS_PER_ENTRY);
        let inserted = hashes(4, MAX_CAPACITY * 3);
        for &hash in &inserted {
            bloom.insert(hash);
        }
        assert!(bloom.is_full());
        assert!(
            !bloom.outgrown(),
            "a rebuild would only scan the index again"
        );
        assert!(
            inserted.iter().all(|&hash| bloom.may_hold(hash)),
            "past its size it still holds every entry"
        );
    }

    #[test]
    fn an_empty_filter_holds_nothing_and_none_built_may_hold_anything() {
        let bloom = Bloom::for_entries(0);
        assert!(
            hashes(3, 1_000)
                .into_iter()
                .all(|hash| !bloom.may_hold(hash))
        );
        assert!(IndexFilter::default().may_hold(42));
    }
}
