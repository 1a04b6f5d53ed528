//! Copy buffers lent for one read-and-write and then handed back.
//!
//! A pair holds a buffer only while its bytes are in flight, so thousands of
//! idle or keep-alive pairs cost no buffer memory, and a busy thread reuses
//! the same few buffers instead of allocating and zeroing one per read.

use std::cell::RefCell;
use std::ops::{Deref, DerefMut};

/// Bytes per buffer. A read that fills one means the sender is streaming.
pub const SIZE: usize = 16 * 1024;

/// Buffers a thread keeps for reuse; more are freed when handed back.
const KEEP: usize = 64;

thread_local! {
    static FREE: RefCell<Vec<Box<[u8]>>> = const { RefCell::new(Vec::new()) };
}

/// A lent buffer of [`SIZE`] bytes; dropping it hands it back.
pub struct Buf(Box<[u8]>);

impl Buf {
    /// Takes a buffer from this thread's free list, or allocates one.
    pub fn take() -> Buf {
        let reused = FREE.try_with(|f| f.borrow_mut().pop()).ok().flatten();
        Buf(reused.unwrap_or_else(|| vec![0u8; SIZE].into_boxed_slice()))
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        let b = std::mem::take(&mut self.0);
        // A task may hand the buffer back on another thread than it took it
        // on; either list is fine. During thread teardown the list is gone
        // and the buffer is simply freed.
        let _ = FREE.try_with(|f| {
            let mut f = f.borrow_mut();
            if f.len() < KEEP {
                f.push(b);
            }
        });
    }
}

impl Deref for Buf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_reused_on_the_same_thread() {
        let first = Buf::take();
        let addr = first.as_ptr();
        assert_eq!(first.len(), SIZE);
        drop(first);
        let again = Buf::take();
        assert_eq!(again.as_ptr(), addr, "the freed buffer comes back");
    }
}
