//! 8-bit sketches of the example vectors: what the HNSW build and the search beam compare.
//!
//! A sketch is a unit vector scaled by one factor shared by the whole index and rounded to
//! `i8`, a quarter of the f32 row. Graph walks are bound by fetching scattered rows (a 1M-turn
//! search scores thousands of them, a 1M build hundreds of millions), so scoring sketches
//! instead of f32 rows cuts the bytes each step moves by four. The price is a small error in
//! each score, which can reorder near-ties; [`crate::index::Index::search`] therefore rescores
//! the beam's candidates on the f32 vectors before choosing the `k` it returns, so the hits and
//! their similarities are exact and only the beam's path is approximate.
//!
//! The shared scale maps the largest component magnitude of any example to 127, so no example
//! component is clipped; a query component beyond it saturates, which only blurs that query's
//! beam, not the rescored similarities.

use anyhow::{bail, Result};

use crate::artifact::flat::{row_range, Damaged, Flat, Lazy, Vectors};

/// The largest magnitude a sketch component takes.
const LEVELS: f32 = 127.0;

/// Every example vector as an `i8` row, with the scale they share.
#[derive(Clone, Debug, PartialEq)]
pub struct Sketches {
    data: Lazy<i8>,
    dims: usize,
    scale: f32,
}

impl Sketches {
    /// Sketches of `vectors`, with the scale taken from their largest component; an error only
    /// when a vector is damaged.
    pub fn quantize(vectors: &Vectors) -> Result<Self, Damaged> {
        let dims = vectors.dims();
        let largest = vectors
            .rows()?
            .flatten()
            .fold(0.0f32, |m, x| if x.abs() > m { x.abs() } else { m });
        let scale = if largest > 0.0 && largest.is_finite() {
            LEVELS / largest
        } else {
            LEVELS
        };
        let data: Vec<i8> = vectors.rows()?.flatten().map(|&x| round(x, scale)).collect();
        Ok(Sketches {
            data: Lazy::verified(Flat::owned(data)),
            dims,
            scale,
        })
    }

    /// Sketches over a stored array; an error naming what does not fit when its length is not
    /// `examples` rows of `dims` or the scale is not a positive finite number.
    pub fn from_flat(data: Lazy<i8>, dims: usize, scale: f32, examples: usize) -> Result<Self> {
        if !(scale.is_finite() && scale > 0.0) {
            bail!("the sketch scale is {scale}, not a positive number");
        }
        if dims == 0 || data.len() != examples.saturating_mul(dims) {
            bail!(
                "{} sketch values for {examples} examples of {dims} dims",
                data.len()
            );
        }
        Ok(Sketches { data, dims, scale })
    }

    /// The factor every component was multiplied by before rounding.
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// Number of sketches.
    pub fn len(&self) -> usize {
        self.data.len().checked_div(self.dims).unwrap_or(0)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stored array.
    pub fn flat(&self) -> &Lazy<i8> {
        &self.data
    }

    /// Sketch `i`, verified; `Ok(None)` if there is none.
    pub fn get(&self, i: usize) -> Result<Option<&[i8]>, Damaged> {
        self.data.row(i, self.dims)
    }

    /// Starts loading sketch `i` into the CPU's cache (see [`Lazy::prefetch`]).
    pub fn prefetch(&self, i: usize) {
        self.data.prefetch(row_range(i, self.dims));
    }

    /// A query's sketch, on the examples' scale (components beyond it saturate).
    pub fn query(&self, query: &[f32]) -> Vec<i8> {
        query.iter().map(|&x| round(x, self.scale)).collect()
    }
}

fn round(x: f32, scale: f32) -> i8 {
    // `as` saturates, and maps NaN to 0.
    (x * scale).round().clamp(-LEVELS, LEVELS) as i8
}

/// The dot product of two sketches, in the squared scale.
pub fn dot(a: &[i8], b: &[i8]) -> i32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: `dot_avx2` only needs AVX2, which the CPU was just found to have.
        return unsafe { dot_avx2(a, b) };
    }
    dot_lanes(a, b)
}

/// [`dot_lanes`] compiled for AVX2, which widens and multiplies 16 pairs per instruction where
/// the x86-64 baseline (SSE2) needs several for 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn dot_avx2(a: &[i8], b: &[i8]) -> i32 {
    dot_lanes(a, b)
}

#[inline(always)]
fn dot_lanes(a: &[i8], b: &[i8]) -> i32 {
    const LANES: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: i32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(&x, &y)| x as i32 * y as i32)
        .sum();
    // Sixteen independent sums the compiler keeps in vector registers.
    let mut sums = [0i32; LANES];
    for (x, y) in a_chunks.zip(b_chunks) {
        for i in 0..LANES {
            sums[i] += x[i] as i32 * y[i] as i32;
        }
    }
    sums.iter().sum::<i32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed;

    fn spread(n: usize, dims: usize) -> Vec<Vec<f32>> {
        crate::index::testing::spread(n, dims, 99)
    }

    #[test]
    fn sketch_similarities_stay_within_a_few_thousandths_of_the_exact_ones() {
        let rows = spread(200, 384);
        let sketches = Sketches::quantize(&Vectors::from_rows(&rows)).unwrap();
        let largest = rows.iter().flatten().fold(0.0f32, |m, x| m.max(x.abs()));
        assert_eq!(sketches.scale(), 127.0 / largest);
        let unit = 1.0 / (sketches.scale() * sketches.scale());
        let mut worst = 0.0f32;
        for (i, a) in rows.iter().enumerate().step_by(7) {
            let qa = sketches.query(a);
            assert_eq!(
                qa,
                sketches.get(i).unwrap().unwrap(),
                "a stored row sketches like a query"
            );
            for (j, b) in rows.iter().enumerate() {
                let approx = dot(&qa, sketches.get(j).unwrap().unwrap()) as f32 * unit;
                worst = worst.max((approx - embed::dot(a, b)).abs());
            }
        }
        // Rounding moves each component by at most half a step of 1/scale.
        assert!(worst < 0.01, "largest similarity error {worst}");
        assert!(worst > 0.0, "sketches are approximations");
    }

    #[test]
    fn the_largest_component_maps_to_127_and_query_components_beyond_it_saturate() {
        let rows = vec![vec![0.6, -0.8], vec![0.0, 1.0]];
        let sketches = Sketches::quantize(&Vectors::from_rows(&rows)).unwrap();
        assert_eq!(sketches.get(0).unwrap().unwrap(), &[76, -102]);
        assert_eq!(sketches.get(1).unwrap().unwrap(), &[0, 127]);
        assert_eq!(sketches.query(&[-2.0, f32::NAN]), vec![-127, 0]);
        assert_eq!(sketches.get(2).unwrap(), None);
    }

    #[test]
    fn the_integer_dot_product_matches_a_plain_sum_at_every_length() {
        for n in [0, 1, 15, 16, 17, 384, 385] {
            let a: Vec<i8> = (0..n).map(|i| (i * 37 % 255) as i8).collect();
            let b: Vec<i8> = (0..n).map(|i| (i * 91 % 253) as i8).collect();
            let plain: i32 = a.iter().zip(&b).map(|(&x, &y)| x as i32 * y as i32).sum();
            assert_eq!(dot(&a, &b), plain, "length {n}");
            assert_eq!(dot_lanes(&a, &b), plain, "length {n}, without AVX2");
        }
        assert_eq!(dot(&[-127; 384], &[-127; 384]), 127 * 127 * 384);
    }

    #[test]
    fn stored_sketches_of_the_wrong_size_or_scale_are_refused() {
        let data = || Lazy::verified(Flat::owned(vec![1i8; 12]));
        assert!(Sketches::from_flat(data(), 4, 2.0, 3).is_ok());
        assert!(Sketches::from_flat(data(), 4, 2.0, 4).is_err());
        assert!(Sketches::from_flat(data(), 0, 2.0, 0).is_err());
        for scale in [0.0, -1.0, f32::NAN, f32::INFINITY] {
            assert!(Sketches::from_flat(data(), 4, scale, 3).is_err(), "scale {scale}");
        }
    }
}
