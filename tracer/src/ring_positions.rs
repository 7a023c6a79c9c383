//! Where the ring's reader and writers are. The ring hands records out in
//! the order programs reserved room for them, and one reserved but not yet
//! committed (its program still writing it, or interrupted, say by the
//! flush of its CPU's stage) stops the reader there: `RingBuf::next` then
//! says "nothing more", as it does for an empty ring. A drain that must
//! have read everything put in the ring before a moment (the records a
//! flush of the stages put there, see `order`) compares the reader's
//! position with the writers' at that moment.

use std::{
    os::fd::{AsRawFd as _, BorrowedFd},
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::{Context as _, Result};

/// Read-only mappings of the ring's first two pages: the consumer position
/// (which aya's reader advances) and the producer position (which the
/// programs advance as they reserve).
pub struct RingPositions {
    consumer: *mut libc::c_void,
    producer: *mut libc::c_void,
    page: usize,
}

// SAFETY: the mappings are plain shared memory, read only with atomic
// loads; nothing in them is tied to the thread that made them.
unsafe impl Send for RingPositions {}

impl RingPositions {
    pub fn map(ring: BorrowedFd<'_>) -> Result<Self> {
        // SAFETY: sysconf has no memory preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .context("no page size")?;
        let map_page = |offset: usize| -> Result<*mut libc::c_void> {
            // SAFETY: a new read-only shared mapping of one page of the
            // ring map, which the kernel allows at any offset.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    ring.as_raw_fd(),
                    offset as libc::off_t,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(std::io::Error::last_os_error())
                    .context("cannot map the ring's positions");
            }
            Ok(p)
        };
        let consumer = map_page(0)?;
        let producer = match map_page(page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: mapped just above, `page` bytes.
                unsafe { libc::munmap(consumer, page) };
                return Err(e);
            }
        };
        Ok(RingPositions {
            consumer,
            producer,
            page,
        })
    }

    /// How far the programs have reserved room: every record put in the
    /// ring so far lies before it.
    pub fn producer(&self) -> usize {
        // SAFETY: the kernel's `producer_pos`, an `unsigned long` at the
        // start of its page-aligned, mapped page.
        unsafe { &*self.producer.cast::<AtomicUsize>() }.load(Ordering::Acquire)
    }

    fn consumer(&self) -> usize {
        // SAFETY: the kernel's `consumer_pos`, as above; this process's
        // reader is its only writer.
        unsafe { &*self.consumer.cast::<AtomicUsize>() }.load(Ordering::Acquire)
    }

    /// Whether the reader got past `producer`, a position read earlier:
    /// every record put in the ring before then was read.
    pub fn read_past(&self, producer: usize) -> bool {
        reached(self.consumer(), producer)
    }
}

/// Whether position `consumer` is at or past `producer` (both only grow,
/// and may wrap around).
fn reached(consumer: usize, producer: usize) -> bool {
    consumer.wrapping_sub(producer).cast_signed() >= 0
}

impl Drop for RingPositions {
    fn drop(&mut self) {
        // SAFETY: both were mapped in `map`, `page` bytes each, and are not
        // used after this.
        unsafe {
            libc::munmap(self.consumer, self.page);
            libc::munmap(self.producer, self.page);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::reached;

    #[test]
    fn positions_compare_across_a_wrap() {
        assert!(reached(10, 10));
        assert!(reached(11, 10));
        assert!(!reached(9, 10));
        assert!(reached(3, usize::MAX - 2));
        assert!(!reached(usize::MAX - 2, 3));
    }
}
