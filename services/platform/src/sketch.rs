//! Reach sketches: a HyperLogLog of listener ids, mergeable, stored as
//! bytes (`reach_sketches.sketch`, migration 21) by the loader and merged
//! by the reports (docs/COUNTING.md, "Reach and frequency").
//!
//! - Precision [`PRECISION`] = 14: [`REGISTERS`] = 16,384 registers of one
//!   byte, a relative standard error of 1.04 / √16384 ≈ 0.81%.
//! - Small sets are held exactly, as the sorted 64-bit hashes of their
//!   listeners (the sparse form), up to [`SPARSE_MAX`] of them, where the
//!   sparse form would outgrow the dense one. Beyond that, the registers
//!   (the dense form), estimated with Ertl's improved estimator ("New
//!   cardinality estimation algorithms for HyperLogLog sketches", 2017,
//!   algorithm 6), which needs neither bias tables nor a switch to linear
//!   counting: it is unbiased from a few listeners to far beyond any
//!   audience.
//! - The form is a function of the set alone (sparse exactly when it holds
//!   at most `SPARSE_MAX` distinct hashes), so one set always serializes to
//!   the same bytes, however it was built or merged: `earshot verify`
//!   compares bytes.
//! - Listener ids are hashed with [`listener_hash`], a fixed function (no
//!   random seed), so sketches written by different processes merge.

use std::fmt;

/// Index bits of a hash: 2^14 registers.
pub const PRECISION: u8 = 14;
/// Number of registers.
pub const REGISTERS: usize = 1 << PRECISION;
/// Bits of a hash left after the index; a register holds 1 + the number of
/// leading zeros among them, at most `RANK_BITS + 1`.
const RANK_BITS: u32 = 64 - PRECISION as u32;
/// Most distinct hashes the sparse form holds: 8 bytes each, it is then
/// as large as the dense form's 16,384 registers.
pub const SPARSE_MAX: usize = REGISTERS / 8;
/// The first byte of every serialized sketch.
pub const FORMAT_VERSION: u8 = 1;
/// Version, precision, form.
const HEADER: usize = 3;
const SPARSE: u8 = 0;
const DENSE: u8 = 1;
/// Relative standard error of the dense form: 1.04 / √[`REGISTERS`].
pub const STANDARD_ERROR: f64 = 1.04 / 128.0;

/// `reach_sketches.dim` of a campaign's whole audience (`value` '').
pub const DIM_CAMPAIGN: &str = "";
/// `reach_sketches.dim` of one creative's audience (`value` its id).
pub const DIM_CREATIVE: &str = "creative";
/// `reach_sketches.dim` of one show's audience (`value` its id).
pub const DIM_SHOW: &str = "show";
/// `reach_sketches.dim` of one episode's audience (`value` its id).
pub const DIM_EPISODE: &str = "episode";
/// `reach_sketches.dim` of one country's audience (`value` its code).
pub const DIM_COUNTRY: &str = "country";
/// `reach_sketches.dim` of one app's audience (`value` its name).
pub const DIM_APP: &str = "app";
/// `reach_sketches.dim` of one device's audience (`value` its name).
pub const DIM_DEVICE: &str = "device";
/// Every dimension a campaign's audience is sketched by besides the whole
/// ([`DIM_CAMPAIGN`]): the report dimensions reach is offered for. Each
/// is named as the rollup column it splits (`rollup_hourly`), and its
/// `value` is that column's: '' where the hit did not say (a listener of
/// no known country is in the country '' sketch, as its impressions are in
/// the country '' rows).
pub const DIMS: [&str; 6] = [
    DIM_CREATIVE,
    DIM_SHOW,
    DIM_EPISODE,
    DIM_COUNTRY,
    DIM_APP,
    DIM_DEVICE,
];

/// One listener in this many is in the frequency sample
/// (`frequency_sample`, migration 22): few enough rows for a 90-day
/// distribution of 10 million listeners to read ~156,000 per-listener sums,
/// many enough for a bucket of 100,000 listeners to be within ±2.5% (one
/// standard error; a binomial sample of its listeners).
pub const FREQUENCY_SAMPLE_RATE: u64 = 64;

/// Whether a listener, by its [`listener_hash`], is in the frequency
/// sample: its low bits, which no register's index and nearly no rank
/// reads, so the sample is independent of the sketch's estimate.
pub const fn in_frequency_sample(hash: u64) -> bool {
    hash.is_multiple_of(FREQUENCY_SAMPLE_RATE)
}

/// Bytes that are not a sketch of this version and precision.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SketchError {
    #[error("a reach sketch is at least {HEADER} bytes (version, precision, form); got {0}")]
    TooShort(usize),
    #[error("reach sketch format version {0}; this build reads version {FORMAT_VERSION}")]
    Version(u8),
    #[error("reach sketch of precision {0}; this build reads precision {PRECISION}")]
    Precision(u8),
    #[error("reach sketch form {0} is neither sparse (0) nor dense (1)")]
    Form(u8),
    #[error("malformed sparse reach sketch: {0}")]
    Sparse(&'static str),
    #[error("malformed dense reach sketch: {0}")]
    Dense(&'static str),
}

/// A set of listeners, as a HyperLogLog (see the module's doc).
#[derive(Clone, PartialEq, Eq)]
pub struct Sketch(Form);

#[derive(Clone, PartialEq, Eq)]
enum Form {
    /// Distinct hashes, sorted; at most [`SPARSE_MAX`].
    Sparse(Vec<u64>),
    /// One register per index.
    Dense(Box<[u8]>),
}

impl fmt::Debug for Sketch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Form::Sparse(h) => write!(f, "Sketch(sparse, {} listeners)", h.len()),
            Form::Dense(_) => write!(f, "Sketch(dense, ~{:.0} listeners)", self.estimate()),
        }
    }
}

impl Default for Sketch {
    fn default() -> Self {
        Self::new()
    }
}

/// The 64-bit hash a listener id is sketched by: FNV-1a over its bytes,
/// then MurmurHash3's 64-bit finalizer to spread them over every bit. Fixed
/// (no seed), so every process hashes an id alike. Listener ids are
/// already HMAC outputs, so nothing here needs to resist crafted input.
pub fn listener_hash(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    fmix64(h)
}

/// MurmurHash3's finalizer: a bijection that mixes every input bit into
/// every output bit.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^ (k >> 33)
}

/// A hash's register index and rank.
fn index_rank(h: u64) -> (usize, u8) {
    let index = (h >> RANK_BITS) as usize;
    let rest = h << PRECISION;
    let rank = rest.leading_zeros().min(RANK_BITS) + 1;
    (index, rank as u8)
}

impl Sketch {
    /// The empty set.
    pub fn new() -> Self {
        Sketch(Form::Sparse(Vec::new()))
    }

    /// The set of `hashes` (repeats allowed).
    pub fn from_hashes(hashes: impl IntoIterator<Item = u64>) -> Self {
        let mut v: Vec<u64> = hashes.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        Self::from_sorted(v)
    }

    /// `v` sorted and distinct.
    fn from_sorted(v: Vec<u64>) -> Self {
        if v.len() <= SPARSE_MAX {
            return Sketch(Form::Sparse(v));
        }
        let mut regs = vec![0u8; REGISTERS].into_boxed_slice();
        for h in v {
            add_dense(&mut regs, h);
        }
        Sketch(Form::Dense(regs))
    }

    /// Adds a listener, by its [`listener_hash`].
    pub fn insert(&mut self, hash: u64) {
        match &mut self.0 {
            Form::Sparse(v) => {
                if let Err(at) = v.binary_search(&hash) {
                    v.insert(at, hash);
                    if v.len() > SPARSE_MAX {
                        *self = Self::from_sorted(std::mem::take(v));
                    }
                }
            }
            Form::Dense(regs) => add_dense(regs, hash),
        }
    }

    /// The union of this set and `other`.
    pub fn merge(&mut self, other: &Sketch) {
        match (&mut self.0, &other.0) {
            (Form::Dense(a), Form::Dense(b)) => {
                for (x, y) in a.iter_mut().zip(b.iter()) {
                    *x = (*x).max(*y);
                }
            }
            (Form::Dense(a), Form::Sparse(b)) => {
                for &h in b {
                    add_dense(a, h);
                }
            }
            (Form::Sparse(a), Form::Sparse(b)) => {
                let mut union = Vec::with_capacity(a.len() + b.len());
                let (mut i, mut j) = (0, 0);
                while i < a.len() && j < b.len() {
                    match a[i].cmp(&b[j]) {
                        std::cmp::Ordering::Less => {
                            union.push(a[i]);
                            i += 1;
                        }
                        std::cmp::Ordering::Greater => {
                            union.push(b[j]);
                            j += 1;
                        }
                        std::cmp::Ordering::Equal => {
                            union.push(a[i]);
                            i += 1;
                            j += 1;
                        }
                    }
                }
                union.extend_from_slice(&a[i..]);
                union.extend_from_slice(&b[j..]);
                *self = Self::from_sorted(union);
            }
            (Form::Sparse(a), Form::Dense(b)) => {
                let mut regs = b.clone();
                for &h in a.iter() {
                    add_dense(&mut regs, h);
                }
                *self = Sketch(Form::Dense(regs));
            }
        }
    }

    /// Bytes the sketch holds on the heap: 8 per hash sparse, one per
    /// register dense.
    pub fn heap_bytes(&self) -> usize {
        match &self.0 {
            Form::Sparse(v) => 8 * v.len(),
            Form::Dense(regs) => regs.len(),
        }
    }

    /// Whether the set is held exactly (the sparse form).
    pub fn is_exact(&self) -> bool {
        matches!(self.0, Form::Sparse(_))
    }

    /// The number of distinct listeners: exact in the sparse form, Ertl's
    /// improved estimate in the dense one.
    pub fn estimate(&self) -> f64 {
        match &self.0 {
            Form::Sparse(v) => v.len() as f64,
            Form::Dense(regs) => ertl_estimate(regs),
        }
    }

    /// [`Sketch::estimate`] rounded to a whole listener.
    pub fn count(&self) -> i64 {
        self.estimate().round() as i64
    }

    /// The sketch as stored: a version byte, the precision, the form, then
    /// the sparse form's count (u32, little-endian) and hashes (u64 each,
    /// little-endian, ascending), or the dense form's registers.
    pub fn to_bytes(&self) -> Vec<u8> {
        match &self.0 {
            Form::Sparse(v) => {
                let mut out = Vec::with_capacity(HEADER + 4 + 8 * v.len());
                out.extend_from_slice(&[FORMAT_VERSION, PRECISION, SPARSE]);
                out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                for h in v {
                    out.extend_from_slice(&h.to_le_bytes());
                }
                out
            }
            Form::Dense(regs) => {
                let mut out = Vec::with_capacity(HEADER + REGISTERS);
                out.extend_from_slice(&[FORMAT_VERSION, PRECISION, DENSE]);
                out.extend_from_slice(regs);
                out
            }
        }
    }

    /// Reads [`Sketch::to_bytes`]' output, refusing anything else (another
    /// version or precision, a wrong length, unsorted or repeated hashes, a
    /// sparse form that should be dense, a register out of range).
    pub fn from_bytes(b: &[u8]) -> Result<Self, SketchError> {
        if b.len() < HEADER {
            return Err(SketchError::TooShort(b.len()));
        }
        if b[0] != FORMAT_VERSION {
            return Err(SketchError::Version(b[0]));
        }
        if b[1] != PRECISION {
            return Err(SketchError::Precision(b[1]));
        }
        let body = &b[HEADER..];
        match b[2] {
            SPARSE => {
                let Some((n, hashes)) = body.split_first_chunk::<4>() else {
                    return Err(SketchError::Sparse("no count"));
                };
                let n = u32::from_le_bytes(*n) as usize;
                if n > SPARSE_MAX {
                    return Err(SketchError::Sparse(
                        "more hashes than the sparse form holds",
                    ));
                }
                if hashes.len() != 8 * n {
                    return Err(SketchError::Sparse("length does not match its count"));
                }
                let v: Vec<u64> = hashes
                    .chunks_exact(8)
                    .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect();
                if v.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(SketchError::Sparse("hashes not strictly ascending"));
                }
                Ok(Sketch(Form::Sparse(v)))
            }
            DENSE => {
                if body.len() != REGISTERS {
                    return Err(SketchError::Dense("not one byte per register"));
                }
                if body.iter().any(|&r| u32::from(r) > RANK_BITS + 1) {
                    return Err(SketchError::Dense("register beyond the largest rank"));
                }
                Ok(Sketch(Form::Dense(body.into())))
            }
            f => Err(SketchError::Form(f)),
        }
    }
}

fn add_dense(regs: &mut [u8], h: u64) {
    let (i, r) = index_rank(h);
    if regs[i] < r {
        regs[i] = r;
    }
}

/// Ertl's improved raw estimator (algorithm 6 of the paper).
fn ertl_estimate(regs: &[u8]) -> f64 {
    let q = RANK_BITS as usize;
    let mut c = [0u32; 64];
    for &r in regs {
        c[r as usize] += 1;
    }
    let m = REGISTERS as f64;
    let mut z = m * tau(1.0 - f64::from(c[q + 1]) / m);
    for k in (1..=q).rev() {
        z = 0.5 * (z + f64::from(c[k]));
    }
    z += m * sigma(f64::from(c[0]) / m);
    let alpha_inf = 1.0 / (2.0 * std::f64::consts::LN_2);
    alpha_inf * m * m / z
}

fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let mut y = 1.0;
    let mut z = x;
    loop {
        x *= x;
        let before = z;
        z += x * y;
        y += y;
        if z == before {
            return z;
        }
    }
}

fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let mut y = 1.0;
    let mut z = 1.0 - x;
    loop {
        x = x.sqrt();
        let before = z;
        y *= 0.5;
        z -= (1.0 - x).powi(2) * y;
        if z == before {
            return z / 3.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listener id as the edge makes them: 32 hex characters.
    fn id(n: u64) -> String {
        format!(
            "{:032x}",
            u128::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        )
    }

    fn sketch(ids: impl Iterator<Item = u64>) -> Sketch {
        Sketch::from_hashes(ids.map(|n| listener_hash(&id(n))))
    }

    fn relative_error(s: &Sketch, exact: u64) -> f64 {
        (s.estimate() - exact as f64).abs() / exact as f64
    }

    #[test]
    fn the_hash_is_fixed() {
        assert_eq!(listener_hash(""), fmix64(0xcbf2_9ce4_8422_2325));
        assert_eq!(
            listener_hash("0123456789abcdef0123456789abcdef"),
            0x26d521498b2056f3
        );
    }

    #[test]
    fn small_sets_are_counted_exactly() {
        assert_eq!(Sketch::new().count(), 0);
        for n in [1, 2, 10, 100, 1000, SPARSE_MAX as u64] {
            let mut s = sketch(0..n);
            assert_eq!(s.count(), n as i64, "{n}");
            assert!(s.is_exact());
            // Repeats change nothing.
            s.merge(&sketch(0..n));
            s.insert(listener_hash(&id(0)));
            assert_eq!(s.count(), n as i64, "{n}");
        }
    }

    #[test]
    fn just_past_the_sparse_form_the_estimate_stays_close() {
        for n in [SPARSE_MAX as u64 + 1, 5_000, 20_000, 100_000] {
            let s = sketch(0..n);
            assert!(!s.is_exact());
            let e = relative_error(&s, n);
            assert!(e <= 0.02, "{n}: {} ({e})", s.estimate());
        }
    }

    #[test]
    fn two_million_listeners_are_within_two_percent() {
        let n = 2_000_000;
        let s = sketch(0..n);
        let e = relative_error(&s, n);
        assert!(e <= 0.02, "{} ({e})", s.estimate());
        // Ids that differ in their last digits only (as tests number them).
        let counted = Sketch::from_hashes((0..n).map(|i| listener_hash(&format!("{i:032x}"))));
        let e = relative_error(&counted, n);
        assert!(e <= 0.02, "{} ({e})", counted.estimate());
    }

    #[test]
    fn thirty_overlapping_days_merge_within_two_percent() {
        // Day d hears listeners [40,000 d, 40,000 d + 100,000): every
        // listener on two or three days, 1,260,000 distinct over 30 days.
        let days: Vec<Sketch> = (0..30u64)
            .map(|d| sketch(d * 40_000..d * 40_000 + 100_000))
            .collect();
        let mut month = Sketch::new();
        for d in &days {
            month.merge(d);
        }
        let exact = 29 * 40_000 + 100_000;
        let e = relative_error(&month, exact);
        assert!(e <= 0.02, "{} vs {exact} ({e})", month.estimate());
        // The union is the sketch of the union, byte for byte.
        assert_eq!(month.to_bytes(), sketch(0..exact).to_bytes());
    }

    #[test]
    fn merging_is_the_union_whatever_the_forms_and_order() {
        let small = sketch(0..100);
        let other_small = sketch(50..1_500);
        let big = sketch(1_000..30_000);
        let mut a = small.clone();
        a.merge(&other_small);
        assert_eq!(a, sketch(0..1_500), "sparse ∪ sparse stays exact");
        assert!(a.is_exact());
        a.merge(&big);
        let mut b = big.clone();
        b.merge(&other_small);
        b.merge(&small);
        assert_eq!(a, b);
        assert_eq!(a, sketch(0..30_000));
        let mut c = sketch(0..1_500);
        c.merge(&sketch(1_500..3_000));
        assert_eq!(c, sketch(0..3_000), "sparse ∪ sparse past the sparse form");
        assert!(!c.is_exact());
    }

    #[test]
    fn bytes_round_trip_in_both_forms() {
        for s in [Sketch::new(), sketch(0..7), sketch(0..50_000)] {
            let b = s.to_bytes();
            assert_eq!(b[0], FORMAT_VERSION);
            assert_eq!(Sketch::from_bytes(&b).unwrap(), s);
        }
        assert_eq!(sketch(0..7).to_bytes().len(), 3 + 4 + 7 * 8);
        assert_eq!(sketch(0..50_000).to_bytes().len(), 3 + REGISTERS);
    }

    #[test]
    fn malformed_bytes_are_refused_with_what_is_wrong() {
        let sparse = sketch(0..3).to_bytes();
        let dense = sketch(0..10_000).to_bytes();
        let with = |b: &[u8], i: usize, v: u8| {
            let mut b = b.to_vec();
            b[i] = v;
            b
        };
        let err = |b: &[u8]| Sketch::from_bytes(b).unwrap_err();
        assert_eq!(err(&[]), SketchError::TooShort(0));
        assert_eq!(err(&with(&sparse, 0, 2)), SketchError::Version(2));
        assert_eq!(err(&with(&sparse, 1, 12)), SketchError::Precision(12));
        assert_eq!(err(&with(&sparse, 2, 7)), SketchError::Form(7));
        assert_eq!(
            err(&sparse[..sparse.len() - 1]),
            SketchError::Sparse("length does not match its count")
        );
        let mut swapped = sparse.clone();
        swapped[7..15].copy_from_slice(&sparse[15..23]);
        swapped[15..23].copy_from_slice(&sparse[7..15]);
        assert_eq!(
            err(&swapped),
            SketchError::Sparse("hashes not strictly ascending")
        );
        assert_eq!(
            err(&dense[..dense.len() - 1]),
            SketchError::Dense("not one byte per register")
        );
        assert_eq!(
            err(&with(&dense, 3, 52)),
            SketchError::Dense("register beyond the largest rank")
        );
        assert_eq!(err(&sparse[..4]), SketchError::Sparse("no count"));
        assert_eq!(
            SketchError::Version(2).to_string(),
            "reach sketch format version 2; this build reads version 1"
        );
    }
}
