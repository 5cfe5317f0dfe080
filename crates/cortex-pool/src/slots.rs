//! The capacity of an object pool: `max_size` slots, each idle (holding an object),
//! empty (free to create one in) or taken, tracked in bitmaps.
//!
//! Why not a lock-free queue (crossbeam's `ArrayQueue`)? A queue touches three
//! shared cache lines per operation (head, tail, the slot), and being FIFO it hands
//! out the object touched longest ago. Here taking and returning is one atomic
//! read-modify-write on a bitmap word plus an uncontended lock on the slot, and the
//! lowest idle slot goes out first, so a thread that returns an object and takes
//! one again gets the same, still-cached slot back.

use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Slots per bitmap word: the low half of a word marks idle slots, the high half
/// empty ones.
const PER_WORD: usize = 32;
const LOW: u64 = (1 << PER_WORD) - 1;

/// One slot's worth of capacity, taken out of [`Slots`].
pub(crate) enum Taken<T> {
    /// An idle object, from slot `.0`.
    Object(usize, T),
    /// An empty slot to create an object in.
    Empty(usize),
}

/// Padded to two cache lines (the adjacent-line prefetcher pairs them) so objects
/// in neighbouring slots used by different threads do not share one.
#[repr(align(128))]
struct Padded<T>(T);

pub(crate) struct Slots<T> {
    /// Bit `i` of word `w`: slot `w * 32 + i` is idle; bit `32 + i`: it is empty.
    words: Box<[AtomicU64]>,
    objects: Box<[Padded<Mutex<Option<T>>>]>,
}

impl<T> Slots<T> {
    /// `n` empty slots.
    pub(crate) fn new(n: usize) -> Self {
        let words = (0..n.div_ceil(PER_WORD))
            .map(|w| {
                let in_word = (n - w * PER_WORD).min(PER_WORD);
                AtomicU64::new(mask(in_word) << PER_WORD)
            })
            .collect();
        let objects = (0..n).map(|_| Padded(Mutex::new(None))).collect();
        Self { words, objects }
    }

    fn slot(&self, i: usize) -> MutexGuard<'_, Option<T>> {
        self.objects[i]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Take the lowest idle slot's object, else the lowest empty slot.
    #[inline]
    pub(crate) fn take(&self) -> Option<Taken<T>> {
        while let Some(i) = self.claim(LOW) {
            if let Some(obj) = self.slot(i).take() {
                return Some(Taken::Object(i, obj));
            }
            // Unreachable (an idle bit is set only after the object is stored), but
            // never lose the slot: mark it empty and look again.
            self.put_empty(i);
        }
        self.claim(LOW << PER_WORD).map(Taken::Empty)
    }

    /// Clear the lowest set bit under `half` (idle or empty) and return its slot.
    #[inline]
    fn claim(&self, half: u64) -> Option<usize> {
        for (w, word) in self.words.iter().enumerate() {
            let mut cur = word.load(Relaxed);
            while cur & half != 0 {
                let bit = (cur & half).trailing_zeros() as usize;
                match word.compare_exchange_weak(cur, cur & !(1 << bit), Acquire, Relaxed) {
                    Ok(_) => return Some(w * PER_WORD + bit % PER_WORD),
                    Err(now) => cur = now,
                }
            }
        }
        None
    }

    /// Store `obj` in slot `i` (taken by the caller) and mark it idle.
    #[inline]
    pub(crate) fn put_object(&self, i: usize, obj: T) {
        *self.slot(i) = Some(obj);
        self.words[i / PER_WORD].fetch_or(1 << (i % PER_WORD), AcqRel);
    }

    /// Mark slot `i` (taken by the caller, holding no object) empty.
    #[inline]
    pub(crate) fn put_empty(&self, i: usize) {
        self.words[i / PER_WORD].fetch_or(1 << (PER_WORD + i % PER_WORD), AcqRel);
    }

    /// Idle slots now.
    pub(crate) fn idle(&self) -> usize {
        self.words
            .iter()
            .map(|w| (w.load(Relaxed) & LOW).count_ones() as usize)
            .sum()
    }

    /// Take every idle object, leaving its slot empty; `f` sees each one.
    pub(crate) fn drain_idle(&self, mut f: impl FnMut(T)) {
        while let Some(i) = self.claim(LOW) {
            let obj = self.slot(i).take();
            self.put_empty(i);
            if let Some(obj) = obj {
                f(obj);
            }
        }
    }
}

fn mask(bits: usize) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_idle_slot_goes_out_first_then_empty_ones() {
        let s = Slots::<u32>::new(70);
        let mut got = Vec::new();
        while let Some(t) = s.take() {
            match t {
                Taken::Empty(i) => got.push(i),
                Taken::Object(..) => panic!("no objects yet"),
            }
        }
        assert_eq!(got, (0..70).collect::<Vec<_>>());
        s.put_object(40, 7);
        s.put_object(3, 5);
        assert_eq!(s.idle(), 2);
        assert!(matches!(s.take(), Some(Taken::Object(3, 5))));
        assert!(matches!(s.take(), Some(Taken::Object(40, 7))));
        assert!(s.take().is_none());
        s.put_empty(69);
        assert!(matches!(s.take(), Some(Taken::Empty(69))));
    }
}
