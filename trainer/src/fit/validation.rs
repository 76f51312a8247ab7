//! The validation set and the retrieval metrics computed on it after each epoch.

use crate::backbone::Backbone;
use crate::data::crops_to_tensor;
use crate::data::folder::FaceFolder;
use crate::loss::l2_normalize;
use anyhow::{anyhow, Result};
use smoothface_shared::manifest::InputSpec;
use smoothface_shared::metrics::{retrieval_metrics, MetricsError, RetrievalReport};
use tch::{Device, Kind};

/// Validation faces, decoded once and kept in memory.
#[derive(Debug)]
pub struct ValidationSet {
    crops: Vec<Vec<u8>>,
    labels: Vec<u32>,
    /// Files that could not be read, with the reason; they are left out.
    pub skipped: Vec<String>,
}

impl ValidationSet {
    /// Decodes the photos of `folder` as `size` x `size` crops, leaving out (and listing) any
    /// that cannot be read.
    pub fn load(folder: &FaceFolder, size: usize) -> Self {
        let mut set = ValidationSet {
            crops: Vec::new(),
            labels: Vec::new(),
            skipped: Vec::new(),
        };
        for (i, &label) in folder.labels.iter().enumerate() {
            match folder.crop(i, size) {
                Ok(crop) => {
                    set.crops.push(crop);
                    set.labels.push(label as u32);
                }
                Err(e) => set.skipped.push(format!("{e:#}")),
            }
        }
        set
    }

    /// Number of faces.
    pub fn len(&self) -> usize {
        self.crops.len()
    }

    /// True when there is no face.
    pub fn is_empty(&self) -> bool {
        self.crops.is_empty()
    }

    /// Embeds every face with `backbone` in evaluation mode, `batch` at a time, and computes
    /// mAP and Recall@`ks` with every face querying all the others. Embeddings that are NaN or
    /// infinite (weights that diverged, or a starting checkpoint that holds such values) are an
    /// error saying so: they have no ranking to measure.
    pub fn evaluate(
        &self,
        backbone: &dyn Backbone,
        spec: &InputSpec,
        device: Device,
        batch: usize,
        ks: &[usize],
    ) -> Result<RetrievalReport> {
        let mut embeddings = Vec::new();
        let mut dim = 0;
        tch::no_grad(|| -> Result<()> {
            for chunk in self.crops.chunks(batch) {
                let input = crops_to_tensor(chunk, spec).to_device(device);
                let out = l2_normalize(&backbone.forward_t(&input, false))
                    .to_kind(Kind::Float)
                    .to_device(Device::Cpu)
                    .contiguous();
                dim = out.size()[1] as usize;
                embeddings.extend(Vec::<f32>::try_from(out.flatten(0, -1))?);
            }
            Ok(())
        })?;
        retrieval_metrics(&embeddings, dim.max(1), &self.labels, ks).map_err(|e| match e {
            MetricsError::NonFinite { count, total } => anyhow!(
                "the model diverged: {count} of its {total} embedding values are NaN or \
                 infinite (lower [optimizer] lr, or check the starting weights)"
            ),
            other => anyhow!(other),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::{input_spec, Arch, Options};

    /// A backbone whose weights are NaN (as after a divergent step) makes validation an error
    /// that says the model diverged, not a panic.
    #[test]
    fn a_diverged_model_is_an_error_not_a_panic() {
        let vs = tch::nn::VarStore::new(Device::Cpu);
        let backbone = Arch::MobileFaceNet.build(&vs.root(), Options::default());
        let spec = input_spec(Arch::MobileFaceNet);
        let crop = vec![128u8; 3 * spec.size * spec.size];
        let set = ValidationSet {
            crops: vec![crop; 4],
            labels: vec![0, 0, 1, 1],
            skipped: Vec::new(),
        };
        let healthy = set.evaluate(backbone.as_ref(), &spec, Device::Cpu, 2, &[1]);
        assert_eq!(healthy.unwrap().queries, 4);
        tch::no_grad(|| {
            for (_, mut var) in vs.variables() {
                let _ = var.fill_(f64::NAN);
            }
        });
        let err = set
            .evaluate(backbone.as_ref(), &spec, Device::Cpu, 2, &[1])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("diverged") && err.contains("NaN or infinite"),
            "{err}"
        );
    }
}
