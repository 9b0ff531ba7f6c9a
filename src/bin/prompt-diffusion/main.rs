//! `prompt-diffusion`: Stable Diffusion 1.5 and the systems built on it, from the command line.
//!
//! ```text
//! prompt-diffusion txt2img --model fixtures/tiny-sd --prompt "a fox" --steps 20 --seed 1
//! prompt-diffusion img2img --checkpoint v1-5-pruned-emaonly.safetensors --init-image in.png --prompt "…"
//! ```
//! Running it without a subcommand prints the help. A command-line mistake prints clap's whole
//! message (status 2); every other error is printed as one line (status 1).

mod annotate;
mod args;
mod controlnet;
mod default_model;
mod help;
mod in_context;
mod metadata;
mod output;
#[cfg(feature = "diff-plugin")]
mod restore;
mod sd;
#[cfg(feature = "versatile")]
mod versatile;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use prompt_diffusion::backends::{BackendTask, run_on, set_kernel_cache_dir};

/// Stable Diffusion 1.5, Prompt Diffusion, Versatile Diffusion and Diff-Plugin on burn.
#[derive(Debug, Parser)]
#[command(
    name = "prompt-diffusion",
    version,
    about,
    arg_required_else_help = true
)]
struct Cli {
    /// Folder for the GPU backends' autotune results and compiled kernels (default:
    /// $PROMPT_DIFFUSION_CACHE_DIR, else ~/.cache/prompt-diffusion/cubecl).
    #[arg(long, global = true, value_name = "DIR", value_parser = args::path_arg())]
    cache_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate images from a prompt.
    #[command(after_help = help::TXT2IMG)]
    Txt2img(sd::Txt2ImgArgs),
    /// Transform an image according to a prompt.
    #[command(after_help = help::IMG2IMG)]
    Img2img(sd::Img2ImgArgs),
    /// Regenerate the masked region of an image according to a prompt.
    #[command(after_help = help::INPAINT)]
    Inpaint(sd::InpaintArgs),
    /// Prompt Diffusion: apply an example pair's task (source → target) to a query image.
    #[command(after_help = help::IN_CONTEXT)]
    InContext(in_context::InContextArgs),
    /// Generate images guided by a standard ControlNet and a hint image.
    #[command(after_help = help::CONTROLNET)]
    Controlnet(controlnet::ControlNetArgs),
    /// Make a hint map (canny edges, soft edges) from an image.
    #[command(after_help = help::ANNOTATE)]
    Annotate(annotate::AnnotateArgs),
    /// Restore an image with Diff-Plugin Task-Plugins (a task, or an instruction).
    #[cfg(feature = "diff-plugin")]
    #[command(after_help = help::RESTORE)]
    Restore(restore::RestoreArgs),
    /// Versatile Diffusion: text-to-image, image-variation, dual-guided, image-to-text,
    /// text-variation.
    #[cfg(feature = "versatile")]
    #[command(after_help = help::VERSATILE)]
    Versatile(versatile::VersatileArgs),
    /// Print the generation parameters a PNG records (AUTOMATIC1111's text, or --json).
    #[command(after_help = help::INFO)]
    Info(metadata::InfoArgs),
}

fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(dir) = &cli.cache_dir {
        set_kernel_cache_dir(dir)?;
    }
    match cli.command {
        Command::Txt2img(args) => run_task(args.model.device, sd::SdRun::txt2img(&args)?),
        Command::Img2img(args) => run_task(args.txt2img.model.device, sd::SdRun::img2img(&args)?),
        Command::Inpaint(args) => run_task(
            args.img2img.txt2img.model.device,
            sd::SdRun::inpaint(&args)?,
        ),
        Command::InContext(args) => {
            run_task(args.model.device, in_context::InContextRun::new(&args)?)
        }
        Command::Controlnet(args) => {
            run_task(args.model.device, controlnet::ControlNetRun::new(&args)?)
        }
        Command::Annotate(args) => annotate::run(&args),
        #[cfg(feature = "diff-plugin")]
        Command::Restore(args) => run_task(args.model.device, restore::RestoreRun::new(args)?),
        #[cfg(feature = "versatile")]
        Command::Versatile(args) => versatile::run(args),
        Command::Info(args) => metadata::info(&args),
    }
}

/// Runs a checked task on the backend `device` names, first announcing the kernel warm-up of a
/// GPU backend.
fn run_task<T: BackendTask<Output = anyhow::Result<()>>>(
    device: args::DeviceArgs,
    task: T,
) -> anyhow::Result<()> {
    if device.backend.is_gpu() && device.backend.compiled() {
        output::announce_kernel_warm_up(device.backend);
    }
    run_on(device.backend, device.precision, task)?
}

/// The error and its causes on one line, skipping causes the message already quotes.
fn one_line(error: &anyhow::Error) -> String {
    let mut line = error.to_string();
    for cause in error.chain().skip(1) {
        let cause = cause.to_string();
        if !line.contains(&cause) {
            line = format!("{line}: {cause}");
        }
    }
    line.replace('\n', " ")
}

/// Panics are bugs; still, report them as one line like every other error.
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        let place = info
            .location()
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "error: internal error: {}{place}",
            message.lines().next().unwrap_or("")
        );
    }));
}

fn main() -> ExitCode {
    install_panic_hook();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .with_target(false)
        .init();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap's whole message: the error, its context (the missing arguments, a suggested
            // spelling) and the usage line; help and version go to stdout with status 0.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}
