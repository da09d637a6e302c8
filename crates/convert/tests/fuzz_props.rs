//! The cargo-fuzz entry points (`crates/fuzz`) on stable: random byte flips, truncations and
//! splices of valid safetensors and GGUF files must give an error or a valid parse, never a
//! panic.

use std::io::Write;

use proptest::prelude::*;
use slmpack_convert::fuzz::{gguf_read, safetensors_header};
use slmpack_gguf::{GgmlType, GgufWriter, Value};

fn valid_safetensors() -> Vec<u8> {
    let header = r#"{"a":{"dtype":"F16","shape":[2,4],"data_offsets":[0,16]},"b":{"dtype":"F32","shape":[3],"data_offsets":[16,28]},"__metadata__":{"format":"pt"}}"#;
    let mut h = header.to_string();
    while !h.len().is_multiple_of(8) {
        h.push(' ');
    }
    let mut v = (h.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(h.as_bytes());
    v.extend((0..28u8).collect::<Vec<_>>());
    v
}

fn valid_gguf() -> Vec<u8> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.gguf");
    let mut w = GgufWriter::new();
    w.set("general.architecture", "llama");
    w.set("llama.block_count", 1u32);
    w.set("tokenizer.ggml.tokens", Value::strings(["a", "b", "c"]));
    w.add_tensor("token_embd.weight", vec![32, 2], GgmlType::Q8_0)
        .unwrap();
    w.add_tensor("output_norm.weight", vec![4], GgmlType::F32)
        .unwrap();
    w.write(&p, |i, t, out: &mut dyn Write| {
        out.write_all(&vec![i as u8; t.n_bytes() as usize])
    })
    .unwrap();
    std::fs::read(p).unwrap()
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
    SetU64(usize, u64),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1u8..=255).prop_map(|(i, b)| Mutation::Flip(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (
            any::<usize>(),
            prop_oneof![Just(u64::MAX), Just(1u64 << 40), any::<u64>(), 0u64..64]
        )
            .prop_map(|(i, v)| Mutation::SetU64(i, v)),
    ]
}

fn apply(mut v: Vec<u8>, ms: &[Mutation]) -> Vec<u8> {
    for m in ms {
        if v.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(i, b) => {
                let n = v.len();
                v[i % n] ^= b;
            }
            Mutation::Truncate(i) => {
                let n = v.len();
                v.truncate(i % n);
            }
            Mutation::Insert(i, bytes) => {
                let n = v.len();
                let at = i % n;
                v.splice(at..at, bytes.iter().copied());
            }
            Mutation::SetU64(i, x) => {
                if v.len() >= 8 {
                    let at = i % (v.len() - 7);
                    v[at..at + 8].copy_from_slice(&x.to_le_bytes());
                }
            }
        }
    }
    v
}

#[test]
fn valid_files_parse() {
    assert!(safetensors_header(&valid_safetensors()));
    assert!(gguf_read(&valid_gguf()));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn mutated_safetensors_never_panic(ms in proptest::collection::vec(mutation(), 1..4)) {
        let _ = safetensors_header(&apply(valid_safetensors(), &ms));
    }

    #[test]
    fn mutated_gguf_never_panics(ms in proptest::collection::vec(mutation(), 1..4)) {
        let _ = gguf_read(&apply(valid_gguf(), &ms));
    }

    #[test]
    fn random_bytes_never_panic(v in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = safetensors_header(&v);
        let mut g = b"GGUF\x03\x00\x00\x00".to_vec();
        g.extend_from_slice(&v);
        let _ = gguf_read(&g);
    }
}
