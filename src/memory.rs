//! Giving freed memory back to the operating system.
//!
//! glibc's allocator keeps what a burst freed in its arenas, so RSS stays at its
//! peak long after the load ends. Two settings undo that for what matters here:
//! - Blocks of [`MMAP_THRESHOLD`] or more always get a mapping of their own, which
//!   `free` unmaps. By default glibc raises that threshold to the size of the last
//!   large block freed, so the second burst's 19 MiB Argon2 buffers land in a
//!   thread's arena, whose top `malloc_trim` never shrinks.
//! - [`give_back`] (`malloc_trim`) returns the free pages of every arena at the end
//!   of a burst, never on a hot path.

/// Larger than any block the message path allocates (a batch of 4,096 sends is
/// under 1 MiB), smaller than an Argon2 buffer.
const MMAP_THRESHOLD: i32 = 8 * 1024 * 1024;

/// Sets the process's allocator up to give memory back (glibc); call once, first.
#[allow(unsafe_code)] // with `give_back`, the crate's only unsafe: no safe wrapper exists
pub fn configure() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` takes two integers and only changes the allocator's settings.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}

/// Returns the allocator's free pages to the system (glibc); elsewhere, nothing.
#[allow(unsafe_code)]
pub fn give_back() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointers and only walks the allocator's own
    // free lists under its locks; it is safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}
