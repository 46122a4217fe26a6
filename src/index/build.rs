//! Building the HNSW graph over the examples' 8-bit sketches, on every core.
//!
//! The algorithm is HNSW as published (Malkov and Yashunin): each node draws its top layer from
//! a geometric distribution, descends greedily through the layers above it, and on each of its
//! own layers searches a beam of `ef_construction` candidates and links to those the diversity
//! heuristic keeps (a candidate is kept only if it is closer to the new node than to every one
//! kept before it). Each neighbour links back; a list that overflows is cut down with the same
//! heuristic, not by dropping its farthest entry, so the links that lead out of a cluster of
//! near-copies survive.
//!
//! It replaces hnsw_rs's build, which the scale bench measures beside it in one process
//! (`PERSONA_BENCH_BASELINE=1`): a profile of that build put twice as much time in its search
//! loop's bookkeeping (hashed visited sets, locked `Arc` neighbour lists) as in the distances.
//! Here similarities are the sketches' integer dot products, visited nodes are epoch stamps,
//! a node's lists are one preallocated run of atomics behind one small lock, and the walk
//! prefetches a node's unseen neighbours before scoring them.
//!
//! Levels come from a hash of the node id, and the first [`SEQUENTIAL`] nodes are inserted by
//! one thread in id order, so a graph of that size is the same in every build. Past it, one
//! thread per core shares the inserts; the links then depend on the order they happen to run
//! in, so two builds of the same data differ slightly, as with any parallel HNSW build. A node
//! writes all its own lists before any other node links back to it, so no other insert can
//! reach it half linked.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{bail, Result};

use super::sketch::{self, Sketches};
use super::{Graph, HnswParams, MAX_LAYER, NONE};
use crate::artifact::flat::Flat;

/// Nodes inserted by one thread before the rest are shared out (see [`graph`]).
const SEQUENTIAL: usize = 10_000;

/// A candidate: similarity (sketch dot product) and node.
type Cand = (i32, u32);

/// Builds the graph over `sketches`; example `i` becomes node `i`.
pub fn graph(sketches: &Sketches, params: HnswParams) -> Result<Graph> {
    build_with(sketches, params, SEQUENTIAL)
}

/// [`graph`], with the first `sequential` nodes inserted by one thread.
fn build_with(sketches: &Sketches, params: HnswParams, sequential: usize) -> Result<Graph> {
    params.check().map_err(anyhow::Error::msg)?;
    let n = sketches.len();
    if n == 0 {
        bail!("there are no examples to index; the dataset needs creator replies outside the held-out set");
    }
    if n >= NONE as usize {
        bail!("{n} examples are more than one index can hold ({})", NONE - 1);
    }
    let rows = (0..n)
        .map(|i| {
            sketches
                .get(i)?
                .ok_or_else(|| anyhow::anyhow!("sketch {i} is missing"))
        })
        .collect::<Result<Vec<&[i8]>>>()?;
    let builder = Builder::new(&rows, sketches, params);
    // The first nodes go in one at a time: while the graph is small, two nodes inserted at
    // once each miss the other in a way a large graph does not notice. A graph of up to
    // `sequential` nodes is therefore built by one thread, and the same in every build.
    let mut scratch = Scratch::new(n);
    for q in 0..n.min(sequential) {
        builder.insert(q as u32, &mut scratch);
    }
    drop(scratch);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let next = AtomicUsize::new(sequential);
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads.min(n.saturating_sub(sequential)))
            .map(|_| {
                scope.spawn(|| {
                    let mut scratch = Scratch::new(n);
                    loop {
                        let q = next.fetch_add(1, Ordering::Relaxed);
                        if q >= n {
                            break;
                        }
                        builder.insert(q as u32, &mut scratch);
                    }
                })
            })
            .collect();
        for worker in workers {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    let extra = builder.repair();
    builder.into_graph(&extra)
}

/// The graph under construction: every list preallocated, each node's lists behind its lock.
struct Builder<'a> {
    rows: &'a [&'a [i8]],
    sketches: &'a Sketches,
    /// Links a node keeps on layers above 0 (`M`); layer 0 keeps twice as many.
    m: usize,
    ef: usize,
    levels: Vec<u8>,
    /// Where node `v`'s lists start in `slots`: layer 0, then layers 1..=level; each list is a
    /// count followed by its capacity of ids.
    start: Vec<usize>,
    slots: Vec<AtomicU32>,
    locks: Vec<Mutex<()>>,
    /// The entry point and its layer, once the first node is in.
    entry: Mutex<Option<(u32, u8)>>,
}

/// One worker's reusable memory.
struct Scratch {
    /// `stamp[v] == epoch` when `v` was seen in the current search.
    stamp: Vec<u32>,
    epoch: u32,
    list: Vec<u32>,
    unseen: Vec<u32>,
}

impl Scratch {
    fn new(n: usize) -> Self {
        Scratch {
            stamp: vec![0; n],
            epoch: 0,
            list: Vec::new(),
            unseen: Vec::new(),
        }
    }

    /// Starts a new search: every node unseen.
    fn reset(&mut self) {
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.stamp.fill(0);
            self.epoch = 1;
        }
    }

    /// Marks `v` seen; whether it was new.
    fn see(&mut self, v: u32) -> bool {
        match self.stamp.get_mut(v as usize) {
            Some(s) if *s != self.epoch => {
                *s = self.epoch;
                true
            }
            _ => false,
        }
    }
}

/// Node `id`'s top layer: geometric with ratio `1/m` (`1/2` for `m` 1), from a hash of the id.
fn level(id: u32, m: usize) -> u8 {
    // splitmix64 of the id: the same levels in every build.
    let mut z = (id as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let u = ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    let l = -u.ln() / (m.max(2) as f64).ln();
    (l as usize).min(MAX_LAYER - 1) as u8
}

impl<'a> Builder<'a> {
    fn new(rows: &'a [&'a [i8]], sketches: &'a Sketches, params: HnswParams) -> Self {
        let (m, n) = (params.m, rows.len());
        let levels: Vec<u8> = (0..n as u32).map(|id| level(id, m)).collect();
        let mut start = Vec::with_capacity(n);
        let mut total = 0usize;
        for &l in &levels {
            start.push(total);
            total += 1 + 2 * m + l as usize * (1 + m);
        }
        let slots = std::iter::repeat_with(|| AtomicU32::new(0)).take(total).collect();
        let locks = std::iter::repeat_with(|| Mutex::new(())).take(n).collect();
        Builder {
            rows,
            sketches,
            m,
            ef: params.ef_construction,
            levels,
            start,
            slots,
            locks,
            entry: Mutex::new(None),
        }
    }

    fn sim(&self, a: u32, b: u32) -> i32 {
        sketch::dot(self.rows[a as usize], self.rows[b as usize])
    }

    /// How many ids list (`v`, `layer`) may hold.
    fn cap(&self, layer: u8) -> usize {
        if layer == 0 {
            2 * self.m
        } else {
            self.m
        }
    }

    /// Where list (`v`, `layer`) starts in `slots` (its count).
    fn at(&self, v: u32, layer: u8) -> usize {
        let base = self.start[v as usize];
        if layer == 0 {
            base
        } else {
            base + 1 + 2 * self.m + (layer as usize - 1) * (1 + self.m)
        }
    }

    fn lock(&self, v: u32) -> std::sync::MutexGuard<'_, ()> {
        // A worker that panicked holding a lock left at worst a list half rewritten, and its
        // panic ends the build anyway; the data behind the lock is `()`.
        self.locks[v as usize]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Copies list (`v`, `layer`) into `out`.
    fn read(&self, v: u32, layer: u8, out: &mut Vec<u32>) {
        let _guard = self.lock(v);
        self.copy(self.at(v, layer), out);
    }

    /// Copies the list starting at `at` into `out`; the caller holds its node's lock.
    fn copy(&self, at: usize, out: &mut Vec<u32>) {
        out.clear();
        let count = self.slots[at].load(Ordering::Relaxed) as usize;
        out.extend(
            self.slots[at + 1..at + 1 + count]
                .iter()
                .map(|s| s.load(Ordering::Relaxed)),
        );
    }

    /// Replaces list (`v`, `layer`); the caller holds `v`'s lock.
    fn write(&self, v: u32, layer: u8, ids: impl ExactSizeIterator<Item = u32>) {
        let at = self.at(v, layer);
        self.slots[at].store(ids.len() as u32, Ordering::Relaxed);
        for (slot, id) in self.slots[at + 1..].iter().zip(ids) {
            slot.store(id, Ordering::Relaxed);
        }
    }

    fn insert(&self, q: u32, scratch: &mut Scratch) {
        let level = self.levels[q as usize];
        let mut entry = self.entry.lock().unwrap_or_else(|p| p.into_inner());
        let Some((at, top)) = *entry else {
            *entry = Some((q, level));
            return;
        };
        // A node that raises the top layer keeps the entry locked while it links, so no other
        // node enters the graph from a layer that is not connected yet.
        if level <= top {
            drop(entry);
            self.link(q, level, at, top, scratch);
            return;
        }
        self.link(q, level, at, top, scratch);
        *entry = Some((q, level));
    }

    /// Links `q` (top layer `level`) into the graph entered at `at` on layer `top`.
    fn link(&self, q: u32, level: u8, mut at: u32, top: u8, scratch: &mut Scratch) {
        let mut best = self.sim(q, at);
        for layer in (level.saturating_add(1)..=top).rev() {
            loop {
                let mut moved = false;
                self.read(at, layer, &mut scratch.list);
                for i in 0..scratch.list.len() {
                    let nb = scratch.list[i];
                    let s = self.sim(q, nb);
                    if s > best {
                        (best, at, moved) = (s, nb, true);
                    }
                }
                if !moved {
                    break;
                }
            }
        }
        // All of `q`'s own lists are written before any node links back to it, so no other
        // insert can reach `q` while it is still searching.
        let mut entries = vec![(best, at)];
        let mut own = Vec::new();
        for layer in (0..=level.min(top)).rev() {
            let found = self.search(q, &entries, layer, scratch);
            let chosen = self.select(&found, self.m);
            {
                let _guard = self.lock(q);
                self.write(q, layer, chosen.iter().map(|&(_, v)| v));
            }
            own.push((layer, chosen));
            entries = found;
        }
        for (layer, chosen) in own {
            for (s, v) in chosen {
                self.link_back(v, q, s, layer, scratch);
            }
        }
    }

    /// Adds `q` (similarity `s`) to `v`'s list on `layer`, cutting an overflowing list down with
    /// the heuristic.
    fn link_back(&self, v: u32, q: u32, s: i32, layer: u8, scratch: &mut Scratch) {
        let cap = self.cap(layer);
        let at = self.at(v, layer);
        let _guard = self.lock(v);
        self.copy(at, &mut scratch.list);
        let count = scratch.list.len();
        if scratch.list.contains(&q) {
            return;
        }
        if count < cap {
            self.slots[at + 1 + count].store(q, Ordering::Relaxed);
            self.slots[at].store(count as u32 + 1, Ordering::Relaxed);
            return;
        }
        let mut cands: Vec<Cand> = scratch.list.iter().map(|&u| (self.sim(v, u), u)).collect();
        cands.push((s, q));
        cands.sort_unstable_by(|a, b| b.cmp(a));
        let kept = self.select(&cands, cap);
        self.write(v, layer, kept.iter().map(|&(_, u)| u));
    }

    /// The diversity heuristic: from `cands` (best first) keeps up to `max`, each closer to the
    /// base node than to any kept before it.
    fn select(&self, cands: &[Cand], max: usize) -> Vec<Cand> {
        let mut kept: Vec<Cand> = Vec::with_capacity(max);
        for &(s, c) in cands {
            if kept.len() >= max {
                break;
            }
            if kept.iter().all(|&(_, r)| self.sim(c, r) <= s) {
                kept.push((s, c));
            }
        }
        kept
    }

    /// The beam search on `layer` from `entries`: up to `ef` nodes, best first.
    fn search(&self, q: u32, entries: &[Cand], layer: u8, scratch: &mut Scratch) -> Vec<Cand> {
        scratch.reset();
        scratch.see(q);
        let mut frontier: BinaryHeap<Cand> = BinaryHeap::new();
        let mut kept: BinaryHeap<Reverse<Cand>> = BinaryHeap::new();
        for &(s, v) in entries {
            if scratch.see(v) {
                frontier.push((s, v));
                kept.push(Reverse((s, v)));
            }
        }
        while kept.len() > self.ef {
            kept.pop();
        }
        let mut list = std::mem::take(&mut scratch.list);
        let mut unseen = std::mem::take(&mut scratch.unseen);
        while let Some((s, v)) = frontier.pop() {
            let worst = kept.peek().map_or(i32::MIN, |r| r.0 .0);
            if kept.len() >= self.ef && s < worst {
                break;
            }
            self.read(v, layer, &mut list);
            unseen.clear();
            for &nb in &list {
                if scratch.see(nb) {
                    self.sketches.prefetch(nb as usize);
                    unseen.push(nb);
                }
            }
            for &nb in &unseen {
                let s = self.sim(q, nb);
                let worst = kept.peek().map_or(i32::MIN, |r| r.0 .0);
                if kept.len() < self.ef || s > worst {
                    frontier.push((s, nb));
                    kept.push(Reverse((s, nb)));
                    if kept.len() > self.ef {
                        kept.pop();
                    }
                }
            }
        }
        scratch.list = list;
        scratch.unseen = unseen;
        let mut found: Vec<Cand> = kept.into_iter().map(|Reverse(c)| c).collect();
        found.sort_unstable_by(|a, b| b.cmp(a));
        found
    }

    /// Links every node that a walk on layer 0 from the search's entry point cannot reach.
    ///
    /// Cutting an overflowing list down drops links, and a node whose last incoming link went
    /// that way can no longer be found (in the tests: three-dimensional vectors linked with M 3).
    /// Each such node, in id order, gets a link from the most similar of its own neighbours that
    /// is reachable, or from the entry point if none is; the walk then goes on from it. A link is
    /// added, never swapped for another, so each one makes at least one more node reachable and
    /// one pass is enough. The links are returned, to be appended to layer-0 lists (which may
    /// then hold more than their capacity).
    fn repair(&self) -> HashMap<u32, Vec<u32>> {
        let mut extra: HashMap<u32, Vec<u32>> = HashMap::new();
        let n = self.levels.len();
        // The entry point the search uses: the first node on the highest layer.
        let top = self.levels.iter().copied().max().unwrap_or(0);
        let Some(entry) = self.levels.iter().position(|&l| l == top) else {
            return extra;
        };
        let (mut reached, mut list) = (vec![false; n], Vec::new());
        self.walk(entry as u32, &mut reached, &extra, &mut list);
        for v in 0..n as u32 {
            if reached[v as usize] {
                continue;
            }
            self.read(v, 0, &mut list);
            let from = list
                .iter()
                .filter(|&&u| reached[u as usize])
                .max_by_key(|&&u| self.sim(v, u))
                .copied()
                .unwrap_or(entry as u32);
            extra.entry(from).or_default().push(v);
            self.walk(v, &mut reached, &extra, &mut list);
        }
        extra
    }

    /// Marks every node reachable on layer 0 from `start`, the repair's links included.
    fn walk(&self, start: u32, reached: &mut [bool], extra: &HashMap<u32, Vec<u32>>, list: &mut Vec<u32>) {
        let mut stack = vec![start];
        while let Some(v) = stack.pop() {
            if std::mem::replace(&mut reached[v as usize], true) {
                continue;
            }
            self.read(v, 0, list);
            stack.extend(list.iter().filter(|&&u| !reached[u as usize]));
            if let Some(more) = extra.get(&v) {
                stack.extend(more.iter().filter(|&&u| !reached[u as usize]));
            }
        }
    }

    /// The finished lists as a [`Graph`]: layer-0 lists in id order, then each upper node's.
    fn into_graph(self, extra: &HashMap<u32, Vec<u32>>) -> Result<Graph> {
        let n = self.levels.len();
        let mut offsets = Vec::with_capacity(n + n / self.m.max(1) + 2);
        let mut links: Vec<u32> = Vec::new();
        offsets.push(0u32);
        let mut upper = vec![NONE; n];
        let mut list = Vec::new();
        let mut push = |v: u32, layer: u8, offsets: &mut Vec<u32>| -> Result<()> {
            self.read(v, layer, &mut list);
            links.extend_from_slice(&list);
            if layer == 0 {
                links.extend_from_slice(extra.get(&v).map_or(&[][..], |e| &e[..]));
            }
            let end = u32::try_from(links.len()).map_err(|_| {
                anyhow::anyhow!("the graph has more than {} links; lower `index.m`", u32::MAX)
            })?;
            offsets.push(end);
            Ok(())
        };
        for v in 0..n as u32 {
            push(v, 0, &mut offsets)?;
        }
        for v in 0..n as u32 {
            let level = self.levels[v as usize];
            if level > 0 {
                upper[v as usize] = (offsets.len() - 1) as u32;
                for layer in 1..=level {
                    push(v, layer, &mut offsets)?;
                }
            }
        }
        Ok(Graph {
            levels: Flat::owned(self.levels.clone()),
            upper: Flat::owned(upper),
            offsets: Flat::owned(offsets),
            links: Flat::owned(links),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::flat::Vectors;
    use crate::index::testing::{spread, unit};

    #[test]
    fn levels_are_geometric_and_the_same_in_every_build() {
        let levels: Vec<u8> = (0..100_000).map(|id| level(id, 16)).collect();
        assert_eq!(levels, (0..100_000).map(|id| level(id, 16)).collect::<Vec<_>>());
        let above = |l: u8| levels.iter().filter(|&&x| x >= l).count() as f64 / 1e5;
        // P(level >= l) = 16^-l.
        assert!((0.055..0.070).contains(&above(1)), "{}", above(1));
        assert!((0.0025..0.0050).contains(&above(2)), "{}", above(2));
        assert!(levels.iter().all(|&l| (l as usize) < MAX_LAYER));
    }

    #[test]
    fn lists_hold_no_self_links_no_repeats_and_no_more_than_their_capacity() {
        let rows = spread(3000, 16, 99);
        let sketches = Sketches::quantize(&Vectors::from_rows(&rows)).unwrap();
        let params = HnswParams {
            m: 4,
            ef_construction: 32,
            ef_search: 32,
        };
        // One thread from the first insert, and two or more (the repair may add a layer-0
        // link past the capacity there, so that capacity is only checked on one thread).
        for sequential in [SEQUENTIAL, 0] {
            let g = build_with(&sketches, params, sequential).unwrap();
            let lists = g.offsets.len() - 1;
            assert_eq!(lists, 3000 + g.levels.iter().map(|&l| l as usize).sum::<usize>());
            for v in 0..3000u32 {
                for layer in 0..=g.levels[v as usize] {
                    let list = g.neighbours(v, layer);
                    let cap = if layer == 0 { 8 } else { 4 };
                    let alone = g.levels.iter().filter(|&&l| l >= layer).count() == 1;
                    assert!(
                        alone || !list.is_empty(),
                        "node {v} has no links on layer {layer}"
                    );
                    if layer > 0 || sequential > 0 {
                        assert!(list.len() <= cap, "node {v} layer {layer}: {list:?}");
                    }
                    assert!(!list.contains(&v), "node {v} links to itself");
                    let mut sorted = list.to_vec();
                    sorted.sort_unstable();
                    sorted.dedup();
                    assert_eq!(sorted.len(), list.len(), "node {v} layer {layer} repeats a link");
                    assert!(
                        list.iter().all(|&u| g.levels[u as usize] >= layer),
                        "a link to a node without that layer"
                    );
                }
            }
        }
    }

    #[test]
    fn the_heuristic_keeps_a_link_out_of_a_cluster_that_nearest_first_would_drop() {
        // Node 0 is the base; 1..=5 are near-copies of one another just beside it, 6 lies in
        // another direction, a little farther than all of them.
        let mut rows = vec![unit(vec![1.0, 0.0, 0.0])];
        for i in 1..=5 {
            rows.push(unit(vec![1.0, 0.30 + 0.001 * i as f32, 0.0]));
        }
        rows.push(unit(vec![1.0, 0.0, 0.40]));
        let sketches = Sketches::quantize(&Vectors::from_rows(&rows)).unwrap();
        let all: Vec<&[i8]> = (0..rows.len())
            .map(|i| sketches.get(i).unwrap().unwrap())
            .collect();
        let params = HnswParams {
            m: 2,
            ef_construction: 8,
            ef_search: 8,
        };
        let b = Builder::new(&all, &sketches, params);
        let mut cands: Vec<Cand> = (1..rows.len() as u32).map(|v| (b.sim(0, v), v)).collect();
        cands.sort_unstable_by(|a, b| b.cmp(a));
        assert_eq!(cands.last().unwrap().1, 6, "6 is the farthest of the candidates");
        let kept: Vec<u32> = b.select(&cands, 2).iter().map(|c| c.1).collect();
        assert_eq!(kept, vec![cands[0].1, 6]);
    }

    #[test]
    fn every_node_keeps_a_way_in_where_cut_lists_drop_links() {
        // Few links in few dimensions, where the heuristic cuts lists hardest: without the
        // repair, some nodes here lose their last incoming link.
        let params = HnswParams {
            m: 3,
            ef_construction: 16,
            ef_search: 16,
        };
        for (seed, sequential) in (0..5u64).zip([SEQUENTIAL, 0, SEQUENTIAL, 0, SEQUENTIAL]) {
            let sketches = Sketches::quantize(&Vectors::from_rows(&spread(3000, 3, 12345 + seed))).unwrap();
            let g = build_with(&sketches, params, sequential).unwrap();
            let n = g.len();
            let (mut reached, mut stack) = (vec![false; n], vec![g.entry().unwrap().0]);
            while let Some(v) = stack.pop() {
                if !std::mem::replace(&mut reached[v as usize], true) {
                    stack.extend_from_slice(g.neighbours(v, 0));
                }
            }
            let lost: Vec<usize> = (0..n).filter(|&v| !reached[v]).collect();
            assert!(lost.is_empty(), "seed {seed}: nodes {lost:?} cannot be reached");
        }
    }

    #[test]
    fn a_graph_within_the_sequential_start_is_the_same_in_every_build() {
        let sketches = Sketches::quantize(&Vectors::from_rows(&spread(2000, 16, 5))).unwrap();
        let params = HnswParams::default();
        let first = graph(&sketches, params).unwrap();
        for _ in 0..3 {
            assert!(
                graph(&sketches, params).unwrap() == first,
                "two builds of the same data differ"
            );
        }
    }
}
