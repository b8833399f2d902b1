//! The in-memory segment index: digest → segment location, keyed by the raw
//! digest bytes.
//!
//! Why not `HashMap<Digest, Loc>`: a `Digest` is a heap-allocated hex
//! string, so a million entries cost a million allocations, SipHash over 64
//! hex characters per insert and lookup, and about 200 bytes of memory
//! each. Here every algorithm has its own map keyed by the raw hash as an
//! inline array (`[u8; 32]` or `[u8; 64]`), the value is a packed 16-byte
//! [`Slot`] (the payload offset is derived from the algorithm), and the hash
//! function is one keyed multiply over 16 of the digest's bytes: the bytes of
//! a cryptographic digest are already uniformly distributed, so mixing all of
//! them again buys nothing. The per-process random key keeps an adversary
//! who grinds digests (pushing blobs until their digests collide in the low
//! bits) from aiming at one bucket: without the key, which bits matter is
//! unknown, and a full 128-bit input collision is out of reach.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};

use crate::digest::{Algorithm, RawDigest};
use crate::segment;

/// Where a blob's bytes are in a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub seg: u32,
    /// Record start.
    pub record: u64,
    /// Payload start.
    pub payload: u64,
    /// Payload length.
    pub len: u64,
}

impl Loc {
    /// The location of a record of `algorithm` starting at `record`.
    pub fn new(algorithm: Algorithm, seg: u32, record: u64, len: u64) -> Loc {
        Loc {
            seg,
            record,
            payload: record + segment::HEADER_BYTES + algorithm.raw_len() as u64,
            len,
        }
    }

    pub fn record_len(&self) -> u64 {
        self.payload + self.len - self.record
    }
}

/// A [`Loc`] packed for the map: the payload offset follows from the
/// algorithm, and a payload is at most `segment::PAYLOAD_BYTES_MAX` (64 MiB).
#[derive(Clone, Copy)]
struct Slot {
    record: u64,
    len: u32,
    seg: u32,
}

impl Slot {
    fn pack(loc: Loc) -> Slot {
        debug_assert!(loc.len <= segment::PAYLOAD_BYTES_MAX);
        Slot {
            record: loc.record,
            len: loc.len as u32,
            seg: loc.seg,
        }
    }

    fn unpack(self, algorithm: Algorithm) -> Loc {
        Loc::new(algorithm, self.seg, self.record, u64::from(self.len))
    }
}

/// A raw digest as a map key; hashes 16 of its bytes (see the module docs).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key<const N: usize>([u8; N]);

impl<const N: usize> Key<N> {
    fn of(raw: &RawDigest) -> Key<N> {
        let mut key = [0u8; N];
        key.copy_from_slice(raw.as_bytes());
        Key(key)
    }
}

impl<const N: usize> Hash for Key<N> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut a = [0u8; 8];
        let mut b = [0u8; 8];
        a.copy_from_slice(&self.0[..8]);
        b.copy_from_slice(&self.0[8..16]);
        state.write_u64(u64::from_le_bytes(a));
        state.write_u64(u64::from_le_bytes(b));
    }
}

/// Builds [`DigestHasher`]s with a per-process random key.
#[derive(Clone, Copy)]
struct DigestHashBuilder {
    k0: u64,
    k1: u64,
}

impl DigestHashBuilder {
    fn new() -> DigestHashBuilder {
        // std's RandomState is seeded from the OS once per process (and
        // varied per instance): borrow its randomness for our two keys.
        let random = RandomState::new();
        DigestHashBuilder {
            k0: random.hash_one(0u64) | 1,
            k1: random.hash_one(1u64) | 1,
        }
    }
}

impl BuildHasher for DigestHashBuilder {
    type Hasher = DigestHasher;
    fn build_hasher(&self) -> DigestHasher {
        DigestHasher {
            k0: self.k0,
            k1: self.k1,
            state: 0,
        }
    }
}

/// Folded multiply of the keyed input words: one 64×64→128 multiply.
struct DigestHasher {
    k0: u64,
    k1: u64,
    state: u64,
}

impl DigestHasher {
    fn mix(&mut self, word: u64) {
        let product = u128::from(self.state ^ self.k0) * u128::from(word ^ self.k1);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for DigestHasher {
    fn write_u64(&mut self, word: u64) {
        self.mix(word);
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used by `Key`; correct (if slower) for anything else.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

type Map<const N: usize> = HashMap<Key<N>, Slot, DigestHashBuilder>;

/// The segment index: raw digest → [`Loc`].
pub(crate) struct LocMap {
    sha256: Map<32>,
    blake3: Map<32>,
    sha512: Map<64>,
}

impl Default for LocMap {
    fn default() -> Self {
        let random = DigestHashBuilder::new();
        LocMap::with_seed([random.k0, random.k1])
    }
}

impl LocMap {
    /// An empty map hashing with `seed` (see [`LocMap::seed`]).
    pub fn with_seed(seed: [u64; 2]) -> LocMap {
        let hasher = DigestHashBuilder {
            k0: seed[0] | 1,
            k1: seed[1] | 1,
        };
        LocMap {
            sha256: HashMap::with_hasher(hasher),
            blake3: HashMap::with_hasher(hasher),
            sha512: HashMap::with_hasher(hasher),
        }
    }

    /// The hash key. The index snapshot stores it and lists entries in
    /// [`LocMap::iter`] order, which is bucket order: a map rebuilt from the
    /// snapshot with the same key fills its table front to back instead of
    /// at random (two cache misses and a page fault per entry become a
    /// sequential sweep). The key stays as secret as the data directory.
    pub fn seed(&self) -> [u64; 2] {
        let hasher = self.sha256.hasher();
        [hasher.k0, hasher.k1]
    }

    /// Room for `additional` more entries of `algorithm` without rehashing.
    pub fn reserve(&mut self, algorithm: Algorithm, additional: usize) {
        match algorithm {
            Algorithm::Sha256 => self.sha256.reserve(additional),
            Algorithm::Blake3 => self.blake3.reserve(additional),
            Algorithm::Sha512 => self.sha512.reserve(additional),
        }
    }

    pub fn get(&self, digest: &RawDigest) -> Option<Loc> {
        let slot = match digest.algorithm() {
            Algorithm::Sha256 => self.sha256.get(&Key::of(digest)),
            Algorithm::Blake3 => self.blake3.get(&Key::of(digest)),
            Algorithm::Sha512 => self.sha512.get(&Key::of(digest)),
        };
        slot.map(|slot| slot.unpack(digest.algorithm()))
    }

    pub fn contains(&self, digest: &RawDigest) -> bool {
        self.get(digest).is_some()
    }

    pub fn insert(&mut self, digest: &RawDigest, loc: Loc) {
        let slot = Slot::pack(loc);
        match digest.algorithm() {
            Algorithm::Sha256 => self.sha256.insert(Key::of(digest), slot),
            Algorithm::Blake3 => self.blake3.insert(Key::of(digest), slot),
            Algorithm::Sha512 => self.sha512.insert(Key::of(digest), slot),
        };
    }

    pub fn remove(&mut self, digest: &RawDigest) -> Option<Loc> {
        let slot = match digest.algorithm() {
            Algorithm::Sha256 => self.sha256.remove(&Key::of(digest)),
            Algorithm::Blake3 => self.blake3.remove(&Key::of(digest)),
            Algorithm::Sha512 => self.sha512.remove(&Key::of(digest)),
        };
        slot.map(|slot| slot.unpack(digest.algorithm()))
    }

    pub fn len(&self) -> usize {
        self.sha256.len() + self.blake3.len() + self.sha512.len()
    }

    /// Every entry: per algorithm, in bucket order.
    pub fn iter(&self) -> impl Iterator<Item = (RawDigest, Loc)> + '_ {
        fn each<const N: usize>(
            map: &Map<N>,
            algorithm: Algorithm,
        ) -> impl Iterator<Item = (RawDigest, Loc)> + '_ {
            map.iter().filter_map(move |(key, slot)| {
                Some((RawDigest::new(algorithm, &key.0)?, slot.unpack(algorithm)))
            })
        }
        each(&self.sha256, Algorithm::Sha256)
            .chain(each(&self.blake3, Algorithm::Blake3))
            .chain(each(&self.sha512, Algorithm::Sha512))
    }

    /// Every location, in no particular order.
    pub fn locs(&self) -> impl Iterator<Item = Loc> + '_ {
        self.iter().map(|(_, loc)| loc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    #[test]
    fn keeps_algorithms_apart_and_round_trips_locations() {
        let mut map = LocMap::default();
        let mut expected = Vec::new();
        for i in 0..1000u32 {
            for alg in [Algorithm::Sha256, Algorithm::Blake3, Algorithm::Sha512] {
                let raw = Digest::of(alg, &i.to_le_bytes()).to_raw();
                let loc = Loc::new(alg, i % 7, u64::from(i) * 1000, u64::from(i) * 3);
                map.insert(&raw, loc);
                expected.push((raw, loc));
            }
        }
        assert_eq!(map.len(), 3000);
        for (raw, loc) in &expected {
            assert_eq!(map.get(raw), Some(*loc));
            assert_eq!(loc.payload - loc.record, 20 + raw.as_bytes().len() as u64);
        }
        // Same raw bytes under another 32-byte algorithm is another blob.
        let sha = Digest::sha256_of(b"x").to_raw();
        let as_blake3 = RawDigest::new(Algorithm::Blake3, sha.as_bytes()).unwrap();
        assert!(map.get(&as_blake3).is_none());
        let mut all: Vec<_> = map.iter().collect();
        all.sort_by_key(|(_, loc)| (loc.record, loc.payload));
        expected.sort_by_key(|(_, loc)| (loc.record, loc.payload));
        assert_eq!(all, expected);
        let (raw, loc) = expected[5];
        assert_eq!(map.remove(&raw), Some(loc));
        assert!(!map.contains(&raw));
        assert_eq!(map.len(), 2999);
    }

    #[test]
    fn hasher_spreads_digests() {
        let build = DigestHashBuilder::new();
        let mut buckets = [0u32; 64];
        for i in 0..64_000u32 {
            let key: Key<32> = Key::of(&Digest::sha256_of(&i.to_le_bytes()).to_raw());
            buckets[(build.hash_one(key) & 63) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }
}
