use std::ops::{Bound, Index, IndexMut, RangeBounds};

/// Items per chunk unless chosen otherwise: the original design's 1000.
pub const DEFAULT_CHUNK: usize = 1000;

/// A growable list stored in fixed-size chunks: growing never moves what is stored,
/// so references to items stay where they are and no push copies the whole list.
///
/// The original design used chunks so that growth would not copy. Measured in Rust
/// (`cargo bench --bench chunked_vec`, figures in docs/benchmarks.md): on Linux a large
/// `Vec` grows through `realloc`, which moves pages rather than copying bytes. So `Vec`
/// had the same peak heap (8.0 MiB for 1 M `u64`s) and the same worst single push, and it
/// pushed about 4x faster. Choose `ChunkedVec` when items must not move, or where the
/// allocator copies on growth; otherwise `Vec` is the better list.
///
/// ```
/// use cortex_cache::ChunkedVec;
///
/// let mut v = ChunkedVec::with_chunk_size(3);
/// v.extend(0..10);
/// assert_eq!(v.len(), 10);
/// assert_eq!(v[4], 4);
/// assert_eq!(v.get_back(0), Some(&9)); // index from the end, like Python's v[-1]
/// v[4] = 40;
/// assert_eq!(v.range(3..6).copied().collect::<Vec<_>>(), [3, 40, 5]);
/// ```
#[derive(Clone, Debug)]
pub struct ChunkedVec<T> {
    chunks: Vec<Vec<T>>,
    chunk: usize,
    len: usize,
}

impl<T> Default for ChunkedVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ChunkedVec<T> {
    /// Empty, with chunks of [`DEFAULT_CHUNK`] items.
    pub fn new() -> Self {
        Self::with_chunk_size(DEFAULT_CHUNK)
    }

    /// Empty, with chunks of `chunk` items (at least 1).
    pub fn with_chunk_size(chunk: usize) -> Self {
        Self {
            chunks: Vec::new(),
            chunk: chunk.max(1),
            len: 0,
        }
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Append `value`. Never moves stored items.
    pub fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(last) if last.len() < self.chunk => last.push(value),
            _ => {
                let mut c = Vec::with_capacity(self.chunk);
                c.push(value);
                self.chunks.push(c);
            }
        }
        self.len += 1;
    }

    /// Remove and return the last item.
    pub fn pop(&mut self) -> Option<T> {
        let last = self.chunks.last_mut()?;
        let v = last.pop();
        if last.is_empty() {
            self.chunks.pop();
        }
        if v.is_some() {
            self.len -= 1;
        }
        v
    }

    /// The item at `i`.
    pub fn get(&self, i: usize) -> Option<&T> {
        self.chunks.get(i / self.chunk)?.get(i % self.chunk)
    }

    /// The item at `i`, mutably.
    pub fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        let chunk = self.chunk;
        self.chunks.get_mut(i / chunk)?.get_mut(i % chunk)
    }

    /// The item `i` places from the end (`get_back(0)` is the last).
    pub fn get_back(&self, i: usize) -> Option<&T> {
        self.len.checked_sub(i + 1).and_then(|j| self.get(j))
    }

    /// Replace the item at `i`, returning the old one; `None` (and no change) when out
    /// of range.
    pub fn set(&mut self, i: usize, value: T) -> Option<T> {
        self.get_mut(i).map(|slot| std::mem::replace(slot, value))
    }

    /// All items in order.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &T> + '_ {
        self.chunks.iter().flatten()
    }

    /// The items in `range` (clamped to the length), in order.
    pub fn range(&self, range: impl RangeBounds<usize>) -> impl Iterator<Item = &T> + '_ {
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        }
        .min(self.len);
        let end = match range.end_bound() {
            Bound::Included(&e) => e.saturating_add(1),
            Bound::Excluded(&e) => e,
            Bound::Unbounded => self.len,
        }
        .clamp(start, self.len);
        self.iter().skip(start).take(end - start)
    }

    /// Remove everything, freeing the chunks.
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.len = 0;
    }
}

impl<T> Index<usize> for ChunkedVec<T> {
    type Output = T;

    /// # Panics
    /// When `i` is out of range, like a slice.
    fn index(&self, i: usize) -> &T {
        let len = self.len;
        self.get(i)
            .unwrap_or_else(|| panic!("index {i} out of range for ChunkedVec of length {len}"))
    }
}

impl<T> IndexMut<usize> for ChunkedVec<T> {
    /// # Panics
    /// When `i` is out of range, like a slice.
    fn index_mut(&mut self, i: usize) -> &mut T {
        let len = self.len;
        self.get_mut(i)
            .unwrap_or_else(|| panic!("index {i} out of range for ChunkedVec of length {len}"))
    }
}

impl<T> Extend<T> for ChunkedVec<T> {
    fn extend<I: IntoIterator<Item = T>>(&mut self, iter: I) {
        for v in iter {
            self.push(v);
        }
    }
}

impl<T> FromIterator<T> for ChunkedVec<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut v = Self::new();
        v.extend(iter);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_vec() {
        let mut c = ChunkedVec::with_chunk_size(7);
        let mut v = Vec::new();
        for i in 0..100 {
            c.push(i);
            v.push(i);
        }
        assert_eq!(c.len(), v.len());
        assert!(c.iter().eq(v.iter()));
        assert!(c.iter().rev().eq(v.iter().rev()));
        assert_eq!(c.get(100), None);
        assert_eq!(c.get_back(0), Some(&99));
        assert_eq!(c.get_back(99), Some(&0));
        assert_eq!(c.get_back(100), None);
        assert_eq!(c.set(50, -1), Some(50));
        v[50] = -1;
        assert_eq!(c[50], -1);
        assert_eq!(c.set(500, 0), None);
        assert!(c.range(10..20).copied().eq(10..20));
        assert!(c.range(95..).copied().eq(95..100));
        assert!(c.range(..=2).copied().eq(0..=2));
        assert_eq!(c.range(90..200).count(), 10);
        assert_eq!(c.range(200..).count(), 0);
        for _ in 0..30 {
            assert_eq!(c.pop(), v.pop());
        }
        assert!(c.iter().eq(v.iter()));
        c.clear();
        assert!(c.is_empty());
        assert_eq!(c.pop(), None);
    }

    #[test]
    fn stored_items_never_move() {
        let mut c = ChunkedVec::with_chunk_size(4);
        c.push(String::from("first"));
        let before = c[0].as_ptr();
        c.extend((0..1000).map(|i| i.to_string()));
        assert_eq!(c[0].as_ptr(), before);
        let chunk0: *const String = &c[0];
        c.extend((0..1000).map(|i| i.to_string()));
        assert_eq!(
            &c[0] as *const String, chunk0,
            "the first chunk was not reallocated"
        );
    }
}
