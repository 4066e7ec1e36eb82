//! The `runbook` binary: everything lives in the library; this only hands over to it.

/// Counts the bytes each thread holds, so the sandbox can bound a script's total memory
/// (`engine::MAX_SCRIPT_MEMORY`).
#[global_allocator]
static ALLOCATOR: runbook::base::memory::CountingAllocator =
    runbook::base::memory::CountingAllocator;

fn main() -> std::process::ExitCode {
    runbook::front::cli::main()
}
