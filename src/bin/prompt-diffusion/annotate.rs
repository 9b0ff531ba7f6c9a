//! `annotate`: hint maps (Canny edges, soft edges) from ordinary images.

use std::path::PathBuf;

use clap::Args;
use prompt_diffusion::annotators::{
    AnnotatorKind, CannyOptions, SoftEdgeOptions, canny, soft_edge,
};
use prompt_diffusion::core::image::{load_rgb, save_rgb};

use crate::output::check_output;

fn parse_kind(s: &str) -> Result<AnnotatorKind, String> {
    s.parse()
        .map_err(|e: prompt_diffusion::core::Error| e.to_string())
}

/// Arguments of `annotate`.
#[derive(Debug, Clone, Args)]
pub struct AnnotateArgs {
    /// canny (thin binary edges) or softedge (soft, HED-like edges).
    #[arg(long, value_parser = parse_kind)]
    pub kind: AnnotatorKind,
    /// The input image.
    #[arg(value_name = "IN", value_parser = crate::args::path_arg())]
    pub input: PathBuf,
    /// The output PNG.
    #[arg(value_name = "OUT", value_parser = crate::args::path_arg())]
    pub output: PathBuf,
    /// canny: gradient magnitude that continues an edge.
    #[arg(long, default_value_t = 100.0)]
    pub low: f32,
    /// canny: gradient magnitude that starts an edge.
    #[arg(long, default_value_t = 200.0)]
    pub high: f32,
    /// Gaussian blur before the gradient, in pixels (default: 0 for canny, 1.5 for softedge).
    #[arg(long)]
    pub sigma: Option<f32>,
}

/// Reads, annotates and writes.
pub fn run(args: &AnnotateArgs) -> anyhow::Result<()> {
    check_output(&args.output, "png", 1)?;
    if !(args.low.is_finite() && args.high.is_finite() && args.low >= 0.0 && args.low <= args.high)
    {
        anyhow::bail!(
            "--low {} and --high {} must satisfy 0 ≤ low ≤ high",
            args.low,
            args.high
        );
    }
    if args.sigma.is_some_and(|s| !(s.is_finite() && s >= 0.0)) {
        anyhow::bail!("--sigma must be a non-negative number");
    }
    let image = load_rgb(&args.input)?;
    let map = match args.kind {
        AnnotatorKind::Canny => {
            let defaults = CannyOptions::default();
            let options = defaults
                .with_low(args.low)
                .with_high(args.high)
                .with_sigma(args.sigma.unwrap_or(defaults.sigma));
            canny(&image, &options)
        }
        AnnotatorKind::SoftEdge => {
            let defaults = SoftEdgeOptions::default();
            let options = defaults.with_sigma(args.sigma.unwrap_or(defaults.sigma));
            soft_edge(&image, &options)
        }
    };
    save_rgb(&map, &args.output)?;
    println!("wrote {}", args.output.display());
    Ok(())
}
