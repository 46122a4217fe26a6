//! Read-only flat arrays that are either owned or borrowed from a memory-mapped artifact.
//!
//! Compile builds them in memory; `artifact::read` maps the file and hands out views into it, so
//! opening a 1M-turn artifact costs page-table entries, not a copy of its vectors and graph. A
//! [`Flat`] is cheap to clone (it shares its backing) and derefs to a slice either way. A [`Lazy`]
//! is a mapped array too large to checksum before the first answer: it has no `Deref`, and every
//! read goes through [`Lazy::get`], which verifies the 4 KiB blocks it covers the first time they
//! are read, so no unverified byte is ever used. This module owns that backing, not what the
//! arrays mean.

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytemuck::Pod;
use memmap2::Mmap;
use xxhash_rust::xxh3::xxh3_64;

/// A read-only `[T]` owned in memory or viewed inside a memory map.
#[derive(Clone)]
pub struct Flat<T: Pod> {
    backing: Backing<T>,
}

#[derive(Clone)]
enum Backing<T> {
    Owned(Arc<Vec<T>>),
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
}

impl<T: Pod> Flat<T> {
    /// An owned array.
    pub fn owned(items: Vec<T>) -> Self {
        Flat {
            backing: Backing::Owned(Arc::new(items)),
        }
    }

    /// A view of `map[start..start + bytes]`, or `None` when that range is outside the map, is
    /// not a whole number of `T`, or is not aligned for `T`.
    pub fn mapped(map: &Arc<Mmap>, start: usize, bytes: usize) -> Option<Self> {
        let range = map.get(start..start.checked_add(bytes)?)?;
        let items: &[T] = bytemuck::try_cast_slice(range).ok()?;
        Some(Flat {
            backing: Backing::Mapped {
                map: Arc::clone(map),
                start,
                len: items.len(),
            },
        })
    }

    /// The array's bytes, as written to the artifact (little-endian on the targets persona builds
    /// for).
    pub fn as_bytes(&self) -> &[u8] {
        bytemuck::cast_slice(self)
    }
}

impl<T: Pod> Deref for Flat<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        match &self.backing {
            Backing::Owned(v) => v,
            Backing::Mapped { map, start, len } => {
                let bytes = &map[*start..*start + len * std::mem::size_of::<T>()];
                // `mapped` checked size and alignment of this very range.
                bytemuck::cast_slice(bytes)
            }
        }
    }
}

impl<T: Pod + PartialEq> PartialEq for Flat<T> {
    fn eq(&self, other: &Self) -> bool {
        self[..] == other[..]
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Flat<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mapped = matches!(self.backing, Backing::Mapped { .. });
        write!(
            f,
            "Flat({} items{})",
            self.len(),
            if mapped { ", mapped" } else { "" }
        )
    }
}

/// Bytes per checksummed block of a [`Lazy`] array.
pub const BLOCK: usize = 4096;

/// The xxh3-64 of every [`BLOCK`]-byte block of `bytes`, the last one possibly shorter.
pub fn block_sums(bytes: &[u8]) -> Vec<u64> {
    bytes.chunks(BLOCK).map(xxh3_64).collect()
}

/// A block of a lazily verified array whose checksum did not match its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damaged {
    /// What the array is, with the file it is in.
    pub what: Arc<str>,
    /// The damaged block.
    pub block: usize,
}

impl fmt::Display for Damaged {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} are corrupted (block {} does not match its checksum); rebuild the artifact with `persona compile`",
            self.what, self.block
        )
    }
}

impl std::error::Error for Damaged {}

/// The stored checksums of an array's blocks and which blocks have been verified.
struct BlockCheck {
    what: Arc<str>,
    sums: Flat<u64>,
    verified: Box<[AtomicU64]>,
}

impl BlockCheck {
    /// Verifies every block that `bytes[range]` touches and has not been verified yet.
    fn verify(&self, bytes: &[u8], range: Range<usize>) -> Result<(), Damaged> {
        if range.start >= range.end {
            return Ok(());
        }
        for block in range.start / BLOCK..=(range.end - 1) / BLOCK {
            let (word, bit) = (block / 64, 1u64 << (block % 64));
            let done = self.verified.get(word);
            // Relaxed is enough: the bytes never change, so a thread that misses another's mark
            // only verifies the block again.
            if done.is_some_and(|w| w.load(Ordering::Relaxed) & bit != 0) {
                continue;
            }
            let start = block * BLOCK;
            let body = bytes.get(start..(start + BLOCK).min(bytes.len()));
            match (body, self.sums.get(block), done) {
                (Some(body), Some(&sum), Some(w)) if xxh3_64(body) == sum => {
                    w.fetch_or(bit, Ordering::Relaxed);
                }
                _ => {
                    return Err(Damaged {
                        what: Arc::clone(&self.what),
                        block,
                    })
                }
            }
        }
        Ok(())
    }
}

/// A read-only `[T]` whose bytes are verified block by block on first read.
///
/// Owned arrays (built by compile) and arrays of artifacts without block checksums (verified
/// whole when opened) carry no check; [`Lazy::get`] is then a plain bounds-checked slice.
#[derive(Clone)]
pub struct Lazy<T: Pod> {
    flat: Flat<T>,
    check: Option<Arc<BlockCheck>>,
}

impl<T: Pod> Lazy<T> {
    /// An array that needs no further verification: owned, or already checksummed whole.
    pub fn verified(flat: Flat<T>) -> Self {
        Lazy { flat, check: None }
    }

    /// A view of `map[start..start + bytes]` verified on use against `sums` (one per
    /// [`BLOCK`]), or `None` when the view is malformed (see [`Flat::mapped`]) or the number of
    /// sums does not fit its length. `what` names the array and file in errors.
    pub fn mapped(map: &Arc<Mmap>, start: usize, bytes: usize, sums: Flat<u64>, what: &str) -> Option<Self> {
        let flat = Flat::mapped(map, start, bytes)?;
        if sums.len() != bytes.div_ceil(BLOCK) {
            return None;
        }
        let verified = (0..sums.len().div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
        Some(Lazy {
            flat,
            check: Some(Arc::new(BlockCheck {
                what: what.into(),
                sums,
                verified,
            })),
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.flat.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.flat.is_empty()
    }

    /// Items `range`, verified: `Ok(None)` when the range is outside the array, an error when a
    /// block it touches is damaged.
    pub fn get(&self, range: Range<usize>) -> Result<Option<&[T]>, Damaged> {
        let Some(items) = self.flat.get(range.clone()) else {
            return Ok(None);
        };
        if let Some(check) = &self.check {
            let size = std::mem::size_of::<T>();
            check.verify(self.flat.as_bytes(), range.start * size..range.end * size)?;
        }
        Ok(Some(items))
    }

    /// Row `i` of an array of rows `width` items long, verified: `Ok(None)` if there is none.
    pub fn row(&self, i: usize, width: usize) -> Result<Option<&[T]>, Damaged> {
        let Some(start) = i.checked_mul(width) else {
            return Ok(None);
        };
        match start.checked_add(width) {
            Some(end) => self.get(start..end),
            None => Ok(None),
        }
    }

    /// Asks the CPU to start loading items `range` into its cache, so a read that follows soon
    /// does not wait for memory. Nothing is read into the program, so nothing is verified; out
    /// of range does nothing.
    pub fn prefetch(&self, range: Range<usize>) {
        let Some(items) = self.flat.get(range) else {
            return;
        };
        let bytes: &[u8] = bytemuck::cast_slice(items);
        #[cfg(target_arch = "x86_64")]
        {
            // Every 64-byte cache line the items touch, from the line their first byte is in.
            let skew = bytes.as_ptr() as usize % 64;
            for at in (0..bytes.len() + skew).step_by(64) {
                let line = bytes.as_ptr().wrapping_sub(skew).wrapping_add(at);
                // SAFETY: a prefetch is a hint: it never faults and never reads into the program,
                // whatever the address (each one here is in a line the slice touches). SSE, which
                // it needs, is part of every x86-64 CPU.
                unsafe {
                    std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.cast());
                }
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = bytes;
    }

    /// The whole array, every block verified.
    pub fn all(&self) -> Result<&[T], Damaged> {
        Ok(self.get(0..self.len())?.unwrap_or(&[]))
    }
}

impl Lazy<u8> {
    /// The same bytes as an array of `U`, with the same checks; `None` when they are not a whole
    /// number of `U` or, mapped, not aligned for it.
    pub fn cast<U: Pod>(self) -> Option<Lazy<U>> {
        let flat = match &self.flat.backing {
            Backing::Mapped { map, start, len } => Flat::mapped(map, *start, *len)?,
            Backing::Owned(bytes) => {
                if !bytes.len().is_multiple_of(std::mem::size_of::<U>()) {
                    return None;
                }
                Flat::owned(
                    bytes
                        .chunks_exact(std::mem::size_of::<U>())
                        .map(bytemuck::pod_read_unaligned)
                        .collect(),
                )
            }
        };
        Some(Lazy {
            flat,
            check: self.check,
        })
    }
}

impl<T: Pod + PartialEq> PartialEq for Lazy<T> {
    /// Equal when both verify and hold the same items; a damaged array equals nothing.
    fn eq(&self, other: &Self) -> bool {
        matches!((self.all(), other.all()), (Ok(a), Ok(b)) if a == b)
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Lazy<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Lazy({} items{})",
            self.len(),
            if self.check.is_some() {
                ", verified on use"
            } else {
                ""
            }
        )
    }
}

/// The items of row `i` of `width`-item rows, saturating where it would overflow (an empty or
/// out-of-range span, which [`Lazy::prefetch`] ignores).
pub fn row_range(i: usize, width: usize) -> Range<usize> {
    i.saturating_mul(width)..i.saturating_add(1).saturating_mul(width)
}

/// Unit vectors of one dimension, stored row after row.
#[derive(Clone, Debug, PartialEq)]
pub struct Vectors {
    data: Lazy<f32>,
    dims: usize,
}

impl Vectors {
    /// Vectors from rows of equal length; `dims` is taken from the first row (0 when empty).
    pub fn from_rows(rows: &[Vec<f32>]) -> Self {
        let dims = rows.first().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(rows.len() * dims);
        for r in rows {
            debug_assert_eq!(r.len(), dims);
            data.extend_from_slice(r);
        }
        Vectors {
            data: Lazy::verified(Flat::owned(data)),
            dims,
        }
    }

    /// Vectors over a flat array; `None` when its length is not a multiple of `dims`.
    pub fn from_flat(data: Lazy<f32>, dims: usize) -> Option<Self> {
        (dims > 0 && data.len().is_multiple_of(dims)).then_some(Vectors { data, dims })
    }

    /// Number of vectors.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dims).unwrap_or(0)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Dimensions of each vector.
    pub fn dims(&self) -> usize {
        self.dims
    }

    /// Vector `i`, verified; `Ok(None)` if there is none.
    pub fn get(&self, i: usize) -> Result<Option<&[f32]>, Damaged> {
        self.data.row(i, self.dims)
    }

    /// Starts loading vector `i` into the CPU's cache (see [`Lazy::prefetch`]).
    pub fn prefetch(&self, i: usize) {
        self.data.prefetch(row_range(i, self.dims));
    }

    /// Every vector in order, all verified first.
    pub fn rows(&self) -> Result<std::slice::ChunksExact<'_, f32>, Damaged> {
        Ok(self.data.all()?.chunks_exact(self.dims.max(1)))
    }

    /// The flat array.
    pub fn flat(&self) -> &Lazy<f32> {
        &self.data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn map_of(bytes: &[u8]) -> Arc<Mmap> {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(bytes).unwrap();
        Arc::new(unsafe { Mmap::map(&f) }.unwrap())
    }

    #[test]
    fn a_mapped_view_reads_what_an_owned_array_holds() {
        let owned = Flat::owned(vec![1.5f32, -2.0, 3.25, 0.0]);
        let mut bytes = vec![0u8; 8];
        bytes.extend_from_slice(owned.as_bytes());
        let map = map_of(&bytes);
        let view: Flat<f32> = Flat::mapped(&map, 8, 16).unwrap();
        assert_eq!(view, owned);
        let vectors = Vectors::from_flat(Lazy::verified(view), 2).unwrap();
        assert_eq!(vectors.len(), 2);
        assert_eq!(vectors.get(1), Ok(Some(&[3.25f32, 0.0][..])));
        assert_eq!(vectors.get(2), Ok(None));
        assert_eq!(vectors.get(usize::MAX), Ok(None));
    }

    #[test]
    fn out_of_range_ragged_or_misaligned_views_are_refused() {
        let map = map_of(&[0u8; 32]);
        assert!(Flat::<f32>::mapped(&map, 16, 32).is_none(), "past the end");
        assert!(Flat::<f32>::mapped(&map, 0, 6).is_none(), "not whole floats");
        assert!(Flat::<f32>::mapped(&map, 2, 8).is_none(), "misaligned");
        assert!(Flat::<f32>::mapped(&map, usize::MAX, 8).is_none(), "overflow");
        assert!(Vectors::from_flat(Lazy::verified(Flat::owned(vec![0.0; 5])), 2).is_none());
    }

    /// Three and a half blocks of floats, mapped with their block checksums.
    fn lazy_floats(damage_at: Option<usize>) -> Lazy<f32> {
        let floats: Vec<f32> = (0..(BLOCK * 7 / 2 / 4)).map(|i| i as f32).collect();
        let bytes: Vec<u8> = bytemuck::cast_slice(&floats).to_vec();
        let sums = Flat::owned(block_sums(&bytes));
        let mut damaged = bytes;
        if let Some(at) = damage_at {
            damaged[at] ^= 0x40;
        }
        let map = map_of(&damaged);
        Lazy::mapped(&map, 0, damaged.len(), sums, "`a.bin`'s vectors").unwrap()
    }

    #[test]
    fn a_lazy_array_reads_verified_items_and_reports_only_the_damaged_block_it_touches() {
        let good = lazy_floats(None);
        assert_eq!(good.get(0..3), Ok(Some(&[0.0f32, 1.0, 2.0][..])));
        assert_eq!(good.all().map(<[f32]>::len), Ok(BLOCK * 7 / 2 / 4));
        assert_eq!(good.get(10..good.len() + 1), Ok(None), "past the end");

        // A flipped byte in the third block (floats 2048..3072).
        let bad = lazy_floats(Some(2 * BLOCK + 5));
        assert_eq!(bad.get(0..2048).map(|s| s.map(<[f32]>::len)), Ok(Some(2048)));
        assert_eq!(
            bad.get(3072..3584).map(|s| s.map(<[f32]>::len)),
            Ok(Some(512)),
            "the short last block"
        );
        let err = bad.get(2047..2049).unwrap_err();
        assert_eq!(err.block, 2);
        assert!(
            err.to_string().contains("`a.bin`'s vectors are corrupted"),
            "{err}"
        );
        assert!(bad.get(2500..2501).is_err(), "a damaged block stays damaged");
        assert!(bad.all().is_err());
        assert_ne!(bad, good, "a damaged array equals nothing");
    }

    #[test]
    fn a_lazy_array_with_the_wrong_number_of_sums_is_refused() {
        let map = map_of(&[0u8; BLOCK + 8]);
        let two = || Flat::owned(vec![0u64; 2]);
        assert!(Lazy::<f32>::mapped(&map, 0, BLOCK + 8, two(), "x").is_some());
        assert!(Lazy::<f32>::mapped(&map, 0, BLOCK, two(), "x").is_none());
        assert!(Lazy::<f32>::mapped(&map, 0, BLOCK + 8, Flat::owned(vec![0u64; 3]), "x").is_none());
    }
}
