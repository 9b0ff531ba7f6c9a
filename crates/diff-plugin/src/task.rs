//! The eight released Task-Plugins: their names, the official execution order and how each
//! starts its denoising (Diff-Plugin `demo.py` `--tasks`, `infer.sh`).

/// A restoration task with a released Task-Plugin.
///
/// The declaration order is the official order (`demo.py`'s `--tasks` default): the
/// Plugin-Selector's rows are in this order, and selected plugins run in it (not by score).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Task {
    /// Rain removal.
    Derain,
    /// Snow removal.
    Desnow,
    /// Low-light enhancement (starts from pure noise).
    Lowlight,
    /// Haze removal.
    Dehaze,
    /// Deblurring.
    Deblur,
    /// Specular-highlight removal (starts from pure noise).
    Highlight,
    /// Blind face restoration.
    Face,
    /// Moiré removal.
    Demoire,
}

/// The latent a plugin's denoising starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartLatent {
    /// `add_noise(z_c, ε, t₀)`: the degraded image's latent noised to the first timestep
    /// (SDEdit-like; `0.0683·z_c + 0.9977·ε` at t = 999).
    NoisedCondition,
    /// `ε`: pure noise (low-light and highlight, `--inp_of_unet_is_random_noise`).
    PureNoise,
}

impl Task {
    /// Every task, in the official order.
    pub const ALL: [Task; 8] = [
        Task::Derain,
        Task::Desnow,
        Task::Lowlight,
        Task::Dehaze,
        Task::Deblur,
        Task::Highlight,
        Task::Face,
        Task::Demoire,
    ];

    /// The task's folder name under `pre-trained/` (and its name on the command line).
    pub fn name(self) -> &'static str {
        match self {
            Task::Derain => "derain",
            Task::Desnow => "desnow",
            Task::Lowlight => "lowlight",
            Task::Dehaze => "dehaze",
            Task::Deblur => "deblur",
            Task::Highlight => "highlight",
            Task::Face => "face",
            Task::Demoire => "demoire",
        }
    }

    /// The position in the official order (the selector's row).
    pub fn index(self) -> usize {
        self as usize
    }

    /// What the denoising starts from.
    pub fn start_latent(self) -> StartLatent {
        match self {
            Task::Lowlight | Task::Highlight => StartLatent::PureNoise,
            _ => StartLatent::NoisedCondition,
        }
    }

    /// A short instruction that selects this task (the demo's buttons).
    pub fn instruction(self) -> &'static str {
        match self {
            Task::Derain => "remove rain",
            Task::Desnow => "remove snow",
            Task::Lowlight => "enhance brightness",
            Task::Dehaze => "remove haze",
            Task::Deblur => "clear blur",
            Task::Highlight => "remove highlight",
            Task::Face => "enhance face appearance",
            Task::Demoire => "I would like to remove the moire",
        }
    }
}

prompt_diffusion_core::named_values!(Task: "task");

#[cfg(test)]
mod tests {
    use super::*;
    use prompt_diffusion_core::Error;

    #[test]
    fn order_names_and_start_rule() {
        let names: Vec<&str> = Task::ALL.iter().map(|t| t.name()).collect();
        assert_eq!(
            names,
            [
                "derain",
                "desnow",
                "lowlight",
                "dehaze",
                "deblur",
                "highlight",
                "face",
                "demoire"
            ]
        );
        for (i, t) in Task::ALL.iter().enumerate() {
            assert_eq!(t.index(), i);
            assert_eq!(t.name().parse::<Task>().unwrap(), *t);
        }
        let noise: Vec<Task> = Task::ALL
            .into_iter()
            .filter(|t| t.start_latent() == StartLatent::PureNoise)
            .collect();
        assert_eq!(noise, [Task::Lowlight, Task::Highlight]);
        assert_eq!("DeRain".parse::<Task>().unwrap(), Task::Derain);
    }

    #[test]
    fn unknown_task_is_a_typed_error() {
        let err = "desmoke".parse::<Task>().unwrap_err();
        match &err {
            Error::InvalidInput { what, reason } => {
                assert_eq!(what, "task");
                assert!(reason.contains("desmoke") && reason.contains("demoire"));
            }
            other => panic!("unexpected error {other}"),
        }
    }
}
