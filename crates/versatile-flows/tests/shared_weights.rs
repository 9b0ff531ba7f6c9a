//! One copy of the shared layers: the four flows (and dual guidance) run on the same loaded
//! tensors — counted by parameter id, each shared tensor once.

use crate::common::{Io, load, versatile};
use prompt_diffusion_versatile_flows::{Condition, Flow, Modality, ParamCounter, param_ids};

#[test]
fn switching_flows_keeps_one_copy_of_the_shared_weights() {
    let vd = load(&Flow::ALL);
    let diffuser = &vd.diffuser;
    let image = diffuser.image_unet.as_ref().unwrap();
    let text = diffuser.text_unet.as_ref().unwrap();

    // The global layer is one tensor set, held by both UNets.
    assert_eq!(
        param_ids(&image.time_embedding),
        param_ids(&text.time_embedding)
    );
    let global = ParamCounter::new().count(&image.time_embedding).stats();
    let unets = ParamCounter::new().count(image).stats() + ParamCounter::new().count(text).stats();
    let held = diffuser.parameters();
    assert_eq!(held.params + global.params, unets.params);

    let io = Io::open(versatile("io.safetensors"));
    let ids_before = param_ids(diffuser);
    let mut per_flow = 0;
    for flow in [
        Flow::TextToImage,
        Flow::ImageVariation,
        Flow::ImageToText,
        Flow::TextVariation,
        Flow::DualGuided,
    ] {
        let (sample, output) = match flow.output() {
            Modality::Image => (io.t("sample_image"), Modality::Image),
            Modality::Text => (io.t("sample_text"), Modality::Text),
        };
        let conditions: Vec<_> = flow
            .conditions()
            .iter()
            .map(|&m| {
                let tokens = match m {
                    Modality::Text => io.t("context_text"),
                    Modality::Image => io.t("context_image"),
                };
                Condition::new(m, tokens).with_ratio(0.5)
            })
            .collect();
        diffuser
            .forward(sample, io.t("timestep"), output, &conditions)
            .unwrap();
        let used = diffuser.flow_parameters(flow).unwrap();
        eprintln!("{flow}: runs {used}");
        assert!(used.params < held.params);
        if flow != Flow::DualGuided {
            per_flow += used.params;
        }
    }
    eprintln!("held once for all flows: {held}; the four flows run {per_flow} parameters in total");
    // Every layer group is used by two of the four flows: separate copies would need about twice
    // what is held.
    assert!(
        per_flow > held.params * 19 / 10,
        "{per_flow} vs {}",
        held.params
    );
    // Running the flows allocated no new parameters.
    assert_eq!(param_ids(diffuser), ids_before);
    assert_eq!(diffuser.parameters(), held);
}
