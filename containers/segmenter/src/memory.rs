//! The C allocator's settings for a server whose every request allocates the same large
//! buffers (at 12 MP: the decoded RGB image, 36 MB; the mask, 12 MB; the PNG writer's bands).
//!
//! glibc's defaults give each allocation over 128 KiB (the threshold rises only as far as
//! the largest freed block, up to 32 MiB) its own `mmap`, and return freed heap tops over 128 KiB
//! to the kernel. Every request then faults its buffers in again, a page at a time, each page
//! zeroed by the kernel. Measured on 12 MP requests (minor faults from `/proc/PID/stat` over 4
//! warm requests): 33,300 (u2netp) and 26,300 (ISNet) faults per request with the defaults,
//! 6,000 and 3,900 with the settings below. In the side-by-side run of this code against the
//! code before (containers/segmenter/README.md, "Benchmark"), u2netp's decode went from 43 to
//! 29 ms; compose + encode from 108 to 56 ms, with the PNG writer's changes of the same commit. The
//! price: memory freed after a request stays in the process, resident at the high-water mark
//! of the largest requests so far (bounded by the request limits): +85 MB of steady RSS after
//! two u2netp and two ISNet requests (2.73 → 2.82 GB, most of it ONNX Runtime's arenas), which
//! suits a container that does nothing else.

/// Largest allocation served from the heap instead of its own `mmap`, bytes.
pub const MMAP_THRESHOLD: usize = 1 << 30;
/// Free memory kept at the top of a heap before it is given back to the kernel, bytes.
pub const TRIM_THRESHOLD: usize = 1 << 30;

/// Applies [`MMAP_THRESHOLD`] and [`TRIM_THRESHOLD`] with `mallopt(3)`, unless the
/// environment already tunes malloc (`GLIBC_TUNABLES` or `MALLOC_*_` set: the operator's
/// choice wins). Call it first thing in `main`, before any thread starts. Returns whether the
/// settings were applied; always `false` off glibc (musl, macOS), where nothing is changed.
pub fn keep_freed_memory() -> bool {
    let tuned = std::env::vars_os().any(|(k, _)| {
        k.to_str()
            .is_some_and(|k| k == "GLIBC_TUNABLES" || k.starts_with("MALLOC_"))
    });
    if tuned {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    let as_int = |v: usize| libc::c_int::try_from(v).unwrap_or(libc::c_int::MAX);
    // SAFETY: mallopt only stores the parameters; it is called before other threads exist.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, as_int(MMAP_THRESHOLD)) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, as_int(TRIM_THRESHOLD)) == 1
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}
