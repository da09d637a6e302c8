//! The real model runtime behind `slmpack bench`: `slmpack-infer` (memory-mapped GGUF, KV
//! cache, batched prefill, one-token decode) adapted to the bench crate's `Runner` trait.

use std::path::Path;

use slmpack_bench::error::{BenchError, RunnerError};
use slmpack_bench::runner::{LoadOptions, ModelHandle, ModelInfo, Runner};
use slmpack_gguf::GgmlType;
use slmpack_gguf::GgufFile;
use slmpack_infer::chat::{self, Message};
use slmpack_infer::session::DEFAULT_BATCH;
use slmpack_infer::{Model, Session, TextCodec};

pub struct InferRunner;

struct Handle<'s, 'm, 'a> {
    session: Session<'m, 'a>,
    codec: &'s TextCodec,
    info: ModelInfo,
}

fn boxed(e: impl std::error::Error + Send + Sync + 'static) -> RunnerError {
    Box::new(e)
}

impl ModelHandle for Handle<'_, '_, '_> {
    fn info(&self) -> ModelInfo {
        self.info.clone()
    }
    fn n_vocab(&self) -> usize {
        self.session.model().config.n_vocab
    }
    fn n_ctx(&self) -> usize {
        self.session.n_ctx()
    }
    fn bos(&self) -> Option<u32> {
        if self.codec.add_bos {
            self.codec.bos
        } else {
            None
        }
    }
    fn is_eog(&self, id: u32) -> bool {
        self.codec.is_eog(id)
    }
    fn tokenize(&self, text: &str, add_special: bool) -> Result<Vec<u32>, RunnerError> {
        self.codec
            .encode(text, add_special && self.codec.add_bos)
            .map_err(boxed)
    }
    fn detokenize(&self, ids: &[u32]) -> Result<String, RunnerError> {
        self.codec.decode(ids).map_err(boxed)
    }
    fn chat_prompt(&self, user: &str) -> Result<String, RunnerError> {
        match &self.codec.chat_template {
            Some(t) => {
                let tok = |id: Option<u32>| {
                    id.and_then(|i| self.codec.token_text(i))
                        .unwrap_or_default()
                };
                chat::render(
                    t,
                    &[Message::new("user", user)],
                    true,
                    &tok(self.codec.bos),
                    &tok(self.codec.eos),
                )
                .map_err(boxed)
            }
            None => Ok(user.to_string()),
        }
    }
    fn reset(&mut self) {
        self.session.reset();
    }
    fn truncate(&mut self, n: usize) -> bool {
        self.session.truncate(n).is_ok()
    }
    fn eval(&mut self, tokens: &[u32]) -> Result<&[f32], RunnerError> {
        self.session.eval(tokens).map_err(boxed)
    }
    fn eval_all(&mut self, tokens: &[u32]) -> Result<Vec<f32>, RunnerError> {
        self.session.eval_all(tokens).map_err(boxed)
    }
}

fn model_info(model: &Model, mapped: u64, n_ctx: usize) -> ModelInfo {
    let c = &model.config;
    let mut mats = vec![&model.output];
    for l in &model.layers {
        mats.extend([&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down]);
    }
    let weight_bytes = mats.iter().map(|t| t.data.len() as u64).sum();
    let int8 = mats
        .iter()
        .filter(|t| {
            matches!(
                slmpack_kernels::act_type(t.ty),
                Some(GgmlType::Q8_0 | GgmlType::Q8_1 | GgmlType::Q8_K)
            )
        })
        .count()
        * 2
        > mats.len();
    // K and V, f16, per layer
    let kv_per_token = (2 * c.n_layer * c.kv_dim() * 2) as u64;
    ModelInfo {
        n_params: model.n_params(),
        weight_bytes,
        mapped_bytes: mapped,
        kv_bytes: kv_per_token * n_ctx as u64,
        kv_bytes_per_token: kv_per_token,
        int8_matmul: int8,
        isa: format!(
            "{}; {} matrices repacked, {} copied as they are{}",
            slmpack_kernels::isa_report().trim_start_matches("kernels: "),
            model.packed().0,
            model.copied().0,
            match model.packed_huge_bytes() {
                Some(h) => format!(" ({} MiB on huge pages)", h >> 20),
                None => String::new(),
            }
        ),
    }
}

impl Runner for InferRunner {
    fn name(&self) -> String {
        format!("slmpack-infer {}", env!("CARGO_PKG_VERSION"))
    }

    fn with_model(
        &self,
        path: &Path,
        opts: &LoadOptions,
        f: &mut dyn FnMut(&mut dyn ModelHandle) -> slmpack_bench::Result<()>,
    ) -> slmpack_bench::Result<()> {
        let err = |e: RunnerError| BenchError::Runner {
            path: path.to_path_buf(),
            error: e,
        };
        // The kernels run on rayon's global pool (a local pool would need a `Send` callback).
        if let Some(n) = opts.threads {
            let built = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global();
            if built.is_err() && rayon::current_num_threads() != n {
                return Err(BenchError::Invalid(format!(
                    "cannot use {n} threads: the thread pool already runs {}",
                    rayon::current_num_threads()
                )));
            }
        }
        {
            let file = GgufFile::open_populated(path).map_err(|e| err(boxed(e)))?;
            let model = Model::load(&file).map_err(|e| err(boxed(e)))?;
            let codec = TextCodec::from_gguf(&file).map_err(|e| err(boxed(e)))?;
            let n_ctx = opts.n_ctx;
            let session = Session::new(&model, n_ctx, DEFAULT_BATCH).map_err(|e| err(boxed(e)))?;
            let mapped = std::fs::metadata(path)
                .map_err(|e| BenchError::io(path, e))?
                .len();
            let mut h = Handle {
                info: model_info(&model, mapped, n_ctx),
                session,
                codec: &codec,
            };
            f(&mut h)
        }
    }
}
