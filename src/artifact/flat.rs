//! Read-only flat arrays that are either owned or borrowed from a memory-mapped artifact.
//!
//! Compile builds them in memory; `artifact::read` maps the file and hands out views into it, so
//! opening a 1M-turn artifact costs page-table entries, not a copy of its vectors and graph. A
//! [`Flat`] is cheap to clone (it shares its backing) and derefs to a slice either way. This module
//! owns that backing, not what the arrays mean.

use std::ops::Deref;
use std::sync::Arc;

use bytemuck::Pod;
use memmap2::Mmap;

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

/// Unit vectors of one dimension, stored row after row.
#[derive(Clone, Debug, PartialEq)]
pub struct Vectors {
    data: Flat<f32>,
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
            data: Flat::owned(data),
            dims,
        }
    }

    /// Vectors over a flat array; `None` when its length is not a multiple of `dims`.
    pub fn from_flat(data: Flat<f32>, dims: usize) -> Option<Self> {
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

    /// Vector `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&[f32]> {
        let start = i.checked_mul(self.dims)?;
        self.data.get(start..start.checked_add(self.dims)?)
    }

    /// Every vector in order.
    pub fn iter(&self) -> impl Iterator<Item = &[f32]> {
        self.data.chunks_exact(self.dims.max(1))
    }

    /// The flat array.
    pub fn flat(&self) -> &Flat<f32> {
        &self.data
    }
}

impl std::ops::Index<usize> for Vectors {
    type Output = [f32];

    fn index(&self, i: usize) -> &[f32] {
        &self.data[i * self.dims..(i + 1) * self.dims]
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
        let vectors = Vectors::from_flat(view, 2).unwrap();
        assert_eq!(vectors.len(), 2);
        assert_eq!(&vectors[1], &[3.25, 0.0]);
        assert_eq!(vectors.get(2), None);
    }

    #[test]
    fn out_of_range_ragged_or_misaligned_views_are_refused() {
        let map = map_of(&[0u8; 32]);
        assert!(Flat::<f32>::mapped(&map, 16, 32).is_none(), "past the end");
        assert!(Flat::<f32>::mapped(&map, 0, 6).is_none(), "not whole floats");
        assert!(Flat::<f32>::mapped(&map, 2, 8).is_none(), "misaligned");
        assert!(Flat::<f32>::mapped(&map, usize::MAX, 8).is_none(), "overflow");
        assert!(Vectors::from_flat(Flat::owned(vec![0.0; 5]), 2).is_none());
    }
}
