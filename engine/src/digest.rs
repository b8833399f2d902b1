//! OCI content digests (`algorithm:encoded`) and the streaming hashers that
//! compute them.
//!
//! Parsing follows the image-spec grammar strictly for the algorithms berth
//! can verify (sha256, sha512, blake3): lowercase hex of the exact length.
//! Any other algorithm is refused, because a registry that cannot verify a
//! digest must not accept content under it.

use std::fmt;
use std::str::FromStr;

use sha2::Digest as _;

/// A digest algorithm berth can compute and verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256, the algorithm every OCI implementation must support.
    Sha256,
    /// SHA-512.
    Sha512,
    /// BLAKE3 with 256-bit output (registered on image-spec main).
    Blake3,
}

impl Algorithm {
    /// The algorithm's name as it appears before the `:` in a digest.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
            Algorithm::Blake3 => "blake3",
        }
    }

    /// Length of the hex-encoded part of a digest of this algorithm.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 | Algorithm::Blake3 => 64,
            Algorithm::Sha512 => 128,
        }
    }

    /// The algorithm's code in segment records (see `segment`).
    pub(crate) fn code(self) -> u8 {
        match self {
            Algorithm::Sha256 => 1,
            Algorithm::Sha512 => 2,
            Algorithm::Blake3 => 3,
        }
    }

    /// The algorithm with segment-record code `code`.
    pub(crate) fn from_code(code: u8) -> Option<Algorithm> {
        match code {
            1 => Some(Algorithm::Sha256),
            2 => Some(Algorithm::Sha512),
            3 => Some(Algorithm::Blake3),
            _ => None,
        }
    }

    /// Length of the raw (binary) hash in bytes.
    pub(crate) fn raw_len(self) -> usize {
        self.hex_len() / 2
    }

    fn from_name(name: &str) -> Option<Algorithm> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            "blake3" => Some(Algorithm::Blake3),
            _ => None,
        }
    }
}

/// Why a string is not an acceptable digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// No `:` separating algorithm and encoded part.
    #[error("digest has no ':' between algorithm and hex")]
    MissingSeparator,
    /// The algorithm is well-formed but berth cannot verify it.
    #[error("unsupported digest algorithm {0:?}")]
    UnsupportedAlgorithm(String),
    /// The encoded part has the wrong length or is not lowercase hex.
    #[error("digest hex must be {expected} lowercase hex characters")]
    BadEncoding {
        /// Number of hex characters the algorithm requires.
        expected: usize,
    },
}

/// A digest in binary form: the algorithm and the raw hash bytes, inline
/// (no allocation, `Copy`). This is how segment records and the index
/// snapshot store digests and how the in-memory index keys them; [`Digest`]
/// (hex) is the form clients and the metadata use.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RawDigest {
    algorithm: Algorithm,
    /// The raw hash in the first `algorithm.raw_len()` bytes; the rest zero.
    bytes: [u8; 64],
}

impl RawDigest {
    /// A raw digest from its algorithm and hash bytes; `None` if the length
    /// is wrong for the algorithm.
    pub fn new(algorithm: Algorithm, raw: &[u8]) -> Option<RawDigest> {
        if raw.len() != algorithm.raw_len() {
            return None;
        }
        let mut bytes = [0u8; 64];
        bytes[..raw.len()].copy_from_slice(raw);
        Some(RawDigest { algorithm, bytes })
    }

    /// The digest's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The raw hash bytes (`algorithm().raw_len()` of them).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.algorithm.raw_len()]
    }

    /// The hex form.
    pub fn to_digest(&self) -> Digest {
        Digest {
            algorithm: self.algorithm,
            hex: hex::encode(self.as_bytes()),
        }
    }
}

impl fmt::Debug for RawDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.to_digest(), f)
    }
}

/// A validated digest. Guaranteed: the algorithm is supported and the hex
/// part is lowercase hex of exactly the algorithm's length, so `Display`
/// round-trips and the hex is safe to use as a file name.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// The digest's algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The lowercase hex encoding of the hash.
    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// Computes the digest of `data` with `algorithm`.
    pub fn of(algorithm: Algorithm, data: &[u8]) -> Digest {
        let mut hasher = Hasher::new(algorithm);
        hasher.update(data);
        hasher.finish()
    }

    /// The binary form (no allocation).
    pub fn to_raw(&self) -> RawDigest {
        fn nibble(c: u8) -> u8 {
            // The hex is validated lowercase hex (see `FromStr`).
            match c {
                b'0'..=b'9' => c - b'0',
                _ => c.wrapping_sub(b'a').wrapping_add(10) & 0x0f,
            }
        }
        let mut bytes = [0u8; 64];
        for (out, pair) in bytes.iter_mut().zip(self.hex.as_bytes().chunks_exact(2)) {
            *out = (nibble(pair[0]) << 4) | nibble(pair[1]);
        }
        RawDigest {
            algorithm: self.algorithm,
            bytes,
        }
    }

    /// Computes the sha256 digest of `data`.
    pub fn sha256_of(data: &[u8]) -> Digest {
        Digest::of(Algorithm::Sha256, data)
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, hex) = s.split_once(':').ok_or(DigestError::MissingSeparator)?;
        let algorithm = Algorithm::from_name(name)
            .ok_or_else(|| DigestError::UnsupportedAlgorithm(name.chars().take(32).collect()))?;
        let expected = algorithm.hex_len();
        let lower_hex = hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if hex.len() != expected || !lower_hex {
            return Err(DigestError::BadEncoding { expected });
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// A streaming hasher for one [`Algorithm`].
#[derive(Clone)]
pub enum Hasher {
    /// SHA-256 state.
    Sha256(sha2::Sha256),
    /// SHA-512 state.
    Sha512(sha2::Sha512),
    /// BLAKE3 state (boxed: it is large).
    Blake3(Box<blake3::Hasher>),
}

impl Hasher {
    /// A fresh hasher for `algorithm`.
    pub fn new(algorithm: Algorithm) -> Hasher {
        match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
            Algorithm::Blake3 => Hasher::Blake3(Box::new(blake3::Hasher::new())),
        }
    }

    /// Feeds `data` into the hash.
    pub fn update(&mut self, data: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
            Hasher::Blake3(h) => {
                h.update(data);
            }
        }
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        let (algorithm, hex) = match self {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
            Hasher::Blake3(h) => (Algorithm::Blake3, h.finalize().to_hex().to_string()),
        };
        Digest { algorithm, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY_SHA256: &str =
        "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn parses_and_displays_sha256() {
        let d: Digest = EMPTY_SHA256.parse().unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.to_string(), EMPTY_SHA256);
        assert_eq!(Digest::sha256_of(b""), d);
    }

    #[test]
    fn refuses_uppercase_wrong_length_and_unknown_algorithms() {
        let upper = EMPTY_SHA256.to_uppercase().replace("SHA256", "sha256");
        assert_eq!(
            upper.parse::<Digest>(),
            Err(DigestError::BadEncoding { expected: 64 })
        );
        assert!("sha256:abc".parse::<Digest>().is_err());
        assert!("md5:d41d8cd98f00b204e9800998ecf8427e"
            .parse::<Digest>()
            .is_err());
        assert_eq!(
            "sha256".parse::<Digest>(),
            Err(DigestError::MissingSeparator)
        );
        assert!("sha256:../../../../etc/passwd".parse::<Digest>().is_err());
    }

    #[test]
    fn sha512_and_blake3_have_their_own_lengths() {
        let d512 = Digest::of(Algorithm::Sha512, b"x");
        assert_eq!(d512.hex().len(), 128);
        assert_eq!(d512.to_string().parse::<Digest>().unwrap(), d512);
        let b3 = Digest::of(Algorithm::Blake3, b"x");
        assert_eq!(b3.hex().len(), 64);
        assert_eq!(b3.to_string().parse::<Digest>().unwrap(), b3);
    }

    #[test]
    fn raw_form_round_trips() {
        for alg in [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Blake3] {
            let d = Digest::of(alg, b"raw");
            let raw = d.to_raw();
            assert_eq!(raw.algorithm(), alg);
            assert_eq!(raw.as_bytes(), &hex::decode(d.hex()).unwrap()[..]);
            assert_eq!(raw.to_digest(), d);
            assert_eq!(RawDigest::new(alg, raw.as_bytes()), Some(raw));
        }
        assert!(RawDigest::new(Algorithm::Sha256, &[0; 64]).is_none());
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        for alg in [Algorithm::Sha256, Algorithm::Sha512, Algorithm::Blake3] {
            let mut h = Hasher::new(alg);
            for chunk in data.chunks(333) {
                h.update(chunk);
            }
            assert_eq!(h.finish(), Digest::of(alg, &data));
        }
    }
}
