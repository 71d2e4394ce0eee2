//! Choosing the compute device and thread count. libtorch (burn-tch) is the default backend;
//! a build with only the `flex` feature runs burn's pure-Rust CPU backend instead.

use burn::tensor::Device;

use crate::config::DeviceChoice;
use crate::error::TrainError;

/// The device for a choice, without autodiff (add it with `.autodiff()` for training).
#[allow(deprecated)] // burn marks burn-tch deprecated; it is still the fastest CPU path here.
pub fn select_device(choice: DeviceChoice) -> Result<Device, TrainError> {
    #[cfg(feature = "tch")]
    {
        let cuda = tch::Cuda::is_available();
        match choice {
            DeviceChoice::Cpu => Ok(Device::libtorch()),
            DeviceChoice::Auto if cuda => Ok(Device::libtorch_cuda(0)),
            DeviceChoice::Auto => Ok(Device::libtorch()),
            DeviceChoice::Cuda if cuda => Ok(Device::libtorch_cuda(0)),
            DeviceChoice::Cuda => Err(TrainError::Device(
                "CUDA asked for, but this libtorch has no CUDA support or no GPU is visible".into(),
            )),
        }
    }
    #[cfg(all(feature = "flex", not(feature = "tch")))]
    {
        match choice {
            DeviceChoice::Cpu | DeviceChoice::Auto => Ok(Device::flex()),
            DeviceChoice::Cuda => Err(TrainError::Device(
                "this build has only the pure-Rust CPU backend (feature `flex`); build with `tch` for CUDA".into(),
            )),
        }
    }
    #[cfg(not(any(feature = "tch", feature = "flex")))]
    {
        let _ = choice;
        Err(TrainError::Device(
            "built without a backend: enable feature `tch` or `flex`".into(),
        ))
    }
}

/// Cores this process may use: its CPU affinity mask and its cgroup CPU quota (what
/// `std::thread::available_parallelism` reads), at least 1.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Compute threads of one job for the setting `threads` (0 = auto: every core this process may
/// use; a trainer service passes each job its share of the cores instead).
pub fn resolve_compute_threads(threads: usize) -> usize {
    if threads > 0 {
        threads
    } else {
        available_cores()
    }
}

/// Sets the intra-op thread count of the calling thread's libtorch work (what a job trains
/// or predicts with). libtorch keeps the count per calling thread (OpenMP's per-thread
/// setting), so jobs on different threads each keep their own; the process-wide inter-op pool
/// is set to one thread once per process, before the first parallel work.
pub fn set_compute_threads(threads: usize) {
    #[cfg(feature = "tch")]
    if threads > 0 {
        // libtorch accepts the inter-op pool size only before its first parallel work, and tch
        // panics on a second call: set it once per process.
        static INTEROP: std::sync::Once = std::sync::Once::new();
        INTEROP.call_once(|| tch::set_num_interop_threads(1));
        tch::set_num_threads(i32::try_from(threads).unwrap_or(i32::MAX));
    }
    #[cfg(not(feature = "tch"))]
    let _ = threads;
}

/// Heap growth kept beyond each request (glibc `M_TOP_PAD`), see [`tune_allocator`].
pub const ALLOCATOR_TOP_PAD: usize = 256 << 20;

/// Heaps ("arenas") glibc keeps, see [`tune_allocator`].
pub const ALLOCATOR_ARENAS: usize = 1;

/// The environment that gives another process the allocator settings [`tune_allocator`] gives
/// this one (glibc reads these at start-up): what the throughput benchmark hands PyTorch.
pub fn allocator_environment() -> [(&'static str, String); 2] {
    [
        ("MALLOC_TOP_PAD_", ALLOCATOR_TOP_PAD.to_string()),
        ("MALLOC_ARENA_MAX", ALLOCATOR_ARENAS.to_string()),
    ]
}

/// Makes glibc keep freed heap memory for the next batch, in one heap for the whole process.
///
/// Training allocates and frees the same large buffers (gradients, activations: tens of MB
/// each) every batch. With glibc's defaults the top of the heap is trimmed and regrown each
/// time, and every regrowth page-faults the memory in again: measured on the bow benchmark
/// model, the optimizer step took 7.4–9.7 ms instead of 3.7 ms. Keeping 256 MB of top pad
/// removes that churn; the pad is address space, resident only once used.
///
/// The pad works on the main heap only. A thread that is not the main one (every training job
/// runs on its own, [`crate::training::spawn`]) gets a heap of its own ("arena") of at most
/// 64 MB, where a buffer of 128 KB or more that does not fit is mapped from the kernel and
/// unmapped when freed (the same page faults, every batch), and where the pad keeps each heap
/// ever grown for good, so each job's peak stays resident after it. With one arena every thread
/// allocates from the main heap: the pad serves every job, and what one job frees the next
/// batch of any job reuses.
///
/// Called once per process, before the threads that train are started; a `MALLOC_TOP_PAD_` or
/// `MALLOC_ARENA_MAX` set in the environment wins.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static TUNED: std::sync::Once = std::sync::Once::new();
        TUNED.call_once(|| {
            let settings = [
                ("MALLOC_TOP_PAD_", libc::M_TOP_PAD, ALLOCATOR_TOP_PAD),
                ("MALLOC_ARENA_MAX", libc::M_ARENA_MAX, ALLOCATOR_ARENAS),
            ];
            for (variable, parameter, value) in settings {
                if std::env::var_os(variable).is_none() {
                    // SAFETY: mallopt only changes allocator parameters; it is thread-safe in
                    // glibc and takes no pointers.
                    #[allow(unsafe_code)]
                    unsafe {
                        libc::mallopt(parameter, value as libc::c_int);
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_threads_means_every_available_core() {
        assert!(available_cores() >= 1);
        assert_eq!(resolve_compute_threads(3), 3);
        assert_eq!(resolve_compute_threads(0), available_cores());
    }
}
