//! The `kiln` command line.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kiln::{cuda, Device};

#[derive(Parser)]
#[command(
    name = "kiln",
    version,
    about = "Train CNNs on NVIDIA GPUs with hand-written CUDA kernels"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Devices, driver, memory, and whether the CUDA kernels were compiled into this build.
    Info,
}

fn info() -> kiln::Result<()> {
    println!("kiln {}", env!("CARGO_PKG_VERSION"));
    println!(
        "kernels: {} ({} kernels; PTX for {}, emulation always built)",
        if cuda::built_with_kernels() {
            "compiled by nvcc"
        } else {
            "NOT compiled (no nvcc at build time)"
        },
        cuda::kernel_names().len(),
        cuda::ptx_arch()
    );
    println!("best device: {}", Device::best());
    match cuda::cuda_unavailable_reason(0) {
        None => {
            for ordinal in 0..cuda::usable_gpu_count() {
                println!("cuda:{ordinal}: {}", cuda::describe(Device::Cuda(ordinal))?);
            }
        }
        Some(why) => println!("cuda: unavailable: {why}"),
    }
    println!("cpu: {} threads (rayon)", rayon::current_num_threads());
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info => info(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kiln: {e}");
            ExitCode::FAILURE
        }
    }
}
