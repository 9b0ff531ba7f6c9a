//! The examples each subcommand's `--help` ends with.

/// `txt2img --help`.
pub const TXT2IMG: &str = "\
Examples:
  prompt-diffusion txt2img --model fixtures/tiny-sd --prompt \"a red circle\" --seed 42 --output circle.png
  prompt-diffusion txt2img --model stable-diffusion-v1-5/stable-diffusion-v1-5 --prompt \"an astronaut riding a horse\" --steps 25 --scheduler dpm++2m
  prompt-diffusion txt2img --checkpoint v1-5-pruned-emaonly.safetensors --prompt \"a fox\" --num-images 4 --output fox.png";

/// `img2img --help`.
pub const IMG2IMG: &str = "\
Examples:
  prompt-diffusion img2img --model fixtures/tiny-sd --init-image photo.png --strength 0.6 --prompt \"a watercolor painting\"
  prompt-diffusion img2img --checkpoint v1-5-pruned-emaonly.ckpt --init-image sketch.png --prompt \"a castle\" --output castle.png";

/// `inpaint --help`.
pub const INPAINT: &str = "\
Examples:
  prompt-diffusion inpaint --model stable-diffusion-v1-5/stable-diffusion-inpainting --init-image photo.png --mask mask.png --prompt \"a red door\"
  prompt-diffusion inpaint --model fixtures/tiny-sd --init-image photo.png --mask mask.png --strength 0.75 --prompt \"a cat\" --output cat.png";

/// `in-context --help`.
pub const IN_CONTEXT: &str = "\
Examples:
  prompt-diffusion in-context --checkpoint prompt-diffusion.ckpt --example-source edges_a.png --example-target photo_a.png --query edges_b.png --prompt \"a photograph of a house\" --output house.png
  prompt-diffusion in-context --model /models/prompt-diffusion --example-source a.png --example-target a_depth.png --query b.png --prompt \"a depth map\"";

/// `controlnet --help`.
pub const CONTROLNET: &str = "\
Examples:
  prompt-diffusion controlnet --model /models/sd15 --controlnet /models/sd-controlnet-canny --hint edges.png --prompt \"a house\"
  prompt-diffusion annotate --kind canny photo.png edges.png   # make the hint first";

/// `annotate --help`.
pub const ANNOTATE: &str = "\
Examples:
  prompt-diffusion annotate --kind canny photo.png edges.png
  prompt-diffusion annotate --kind softedge photo.png soft.png";

/// `restore --help`.
#[cfg(feature = "diff-plugin")]
pub const RESTORE: &str = "\
Examples:
  prompt-diffusion restore --model /models/sd14 --clip-vision /models/clip-vit-large-patch14 --plugins Diff-Plugin/pre-trained --task derain --input rainy.png --output clean.png
  prompt-diffusion restore --model /models/sd14 --clip-vision /models/clip-vit-large-patch14 --plugins Diff-Plugin/pre-trained --instruction \"remove the snow and the haze\" --input photo.png";

/// `versatile --help`.
#[cfg(feature = "versatile")]
pub const VERSATILE: &str = "\
Examples:
  prompt-diffusion versatile text-to-image --model /models/versatile-diffusion --prompt \"a red car\" --seed 1
  prompt-diffusion versatile dual-guided --model /models/versatile-diffusion --prompt \"a red car\" --image car.png --mix 0.7 --output dual.png
  prompt-diffusion versatile image-to-text --model /models/versatile-diffusion --image car.png --optimus-weights optimus-vae.pth --optimus-vocab optimus_models/vocab";

/// `info --help`.
pub const INFO: &str = "\
Examples:
  prompt-diffusion info fox.png
  prompt-diffusion info fox.png --json
  prompt-diffusion txt2img --model fixtures/tiny-sd --from fox.png --output again.png   # make it again";
