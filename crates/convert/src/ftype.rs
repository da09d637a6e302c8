//! File types ("mixes"): the `llama_ftype` values llama-quantize accepts, with their numbering
//! (stored in `general.file_type`) and the tensor type each one starts from.

use slmpack_gguf::GgmlType;

/// A quantization mix, named and numbered as llama.cpp's `llama_ftype`.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ftype {
    F32,
    F16,
    BF16,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4_K_S,
    Q4_K_M,
    Q5_K_S,
    Q5_K_M,
    Q6_K,
    IQ4_NL,
}

impl Ftype {
    pub const ALL: &'static [Ftype] = &[
        Ftype::F32,
        Ftype::F16,
        Ftype::BF16,
        Ftype::Q8_0,
        Ftype::Q4_0,
        Ftype::Q4_1,
        Ftype::Q5_0,
        Ftype::Q5_1,
        Ftype::Q4_K_S,
        Ftype::Q4_K_M,
        Ftype::Q5_K_S,
        Ftype::Q5_K_M,
        Ftype::Q6_K,
        Ftype::IQ4_NL,
    ];

    /// The `llama_ftype` number written to `general.file_type`.
    pub const fn llama_ftype(self) -> u32 {
        match self {
            Ftype::F32 => 0,
            Ftype::F16 => 1,
            Ftype::Q4_0 => 2,
            Ftype::Q4_1 => 3,
            Ftype::Q8_0 => 7,
            Ftype::Q5_0 => 8,
            Ftype::Q5_1 => 9,
            Ftype::Q4_K_S => 14,
            Ftype::Q4_K_M => 15,
            Ftype::Q5_K_S => 16,
            Ftype::Q5_K_M => 17,
            Ftype::Q6_K => 18,
            Ftype::IQ4_NL => 25,
            Ftype::BF16 => 32,
        }
    }

    /// Lower-case name as `--type` takes it (`q4_k_m`).
    pub const fn name(self) -> &'static str {
        match self {
            Ftype::F32 => "f32",
            Ftype::F16 => "f16",
            Ftype::BF16 => "bf16",
            Ftype::Q8_0 => "q8_0",
            Ftype::Q4_0 => "q4_0",
            Ftype::Q4_1 => "q4_1",
            Ftype::Q5_0 => "q5_0",
            Ftype::Q5_1 => "q5_1",
            Ftype::Q4_K_S => "q4_k_s",
            Ftype::Q4_K_M => "q4_k_m",
            Ftype::Q5_K_S => "q5_k_s",
            Ftype::Q5_K_M => "q5_k_m",
            Ftype::Q6_K => "q6_k",
            Ftype::IQ4_NL => "iq4_nl",
        }
    }

    /// The tensor type the mix starts from (`llama_ftype_get_default_type`).
    pub const fn default_type(self) -> GgmlType {
        match self {
            Ftype::F32 => GgmlType::F32,
            Ftype::F16 => GgmlType::F16,
            Ftype::BF16 => GgmlType::BF16,
            Ftype::Q8_0 => GgmlType::Q8_0,
            Ftype::Q4_0 => GgmlType::Q4_0,
            Ftype::Q4_1 => GgmlType::Q4_1,
            Ftype::Q5_0 => GgmlType::Q5_0,
            Ftype::Q5_1 => GgmlType::Q5_1,
            Ftype::Q4_K_S | Ftype::Q4_K_M => GgmlType::Q4_K,
            Ftype::Q5_K_S | Ftype::Q5_K_M => GgmlType::Q5_K,
            Ftype::Q6_K => GgmlType::Q6_K,
            Ftype::IQ4_NL => GgmlType::IQ4_NL,
        }
    }

    /// Parse a mix name case-insensitively; `q4_k` and `q5_k` are the `_m` mixes, as in
    /// llama-quantize.
    pub fn parse(s: &str) -> Option<Ftype> {
        let l = s.trim().to_ascii_lowercase();
        let l = match l.as_str() {
            "q4_k" => "q4_k_m",
            "q5_k" => "q5_k_m",
            other => other,
        };
        Self::ALL.iter().copied().find(|f| f.name() == l)
    }

    /// The mix names, for error hints.
    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|f| f.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl std::fmt::Display for Ftype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Ftype {
    type Err = crate::ConvertError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ftype::parse(s).ok_or_else(|| crate::ConvertError::UnknownType {
            name: s.to_string(),
        })
    }
}

/// Parse a tensor type for an override (`q6_k`, `Q8_0`, `f16`), only the types slmpack writes.
pub fn parse_tensor_type(s: &str) -> Result<GgmlType, crate::ConvertError> {
    match GgmlType::from_name(s.trim()) {
        Some(t) if slmpack_quant::can_quantize(t) => Ok(t),
        _ => Err(crate::ConvertError::UnknownTensorType {
            name: s.to_string(),
            known: writable_types(),
        }),
    }
}

fn writable_types() -> String {
    GgmlType::ALL
        .iter()
        .filter(|t| slmpack_quant::can_quantize(**t))
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_aliases() {
        assert_eq!(Ftype::parse("Q4_K_M"), Some(Ftype::Q4_K_M));
        assert_eq!(Ftype::parse("q4_k"), Some(Ftype::Q4_K_M));
        assert_eq!(Ftype::parse("Q5_K"), Some(Ftype::Q5_K_M));
        assert_eq!(Ftype::parse("q4_k_x"), None);
        assert_eq!(Ftype::Q8_0.llama_ftype(), 7);
        assert_eq!(Ftype::BF16.llama_ftype(), 32);
        assert_eq!(Ftype::Q4_K_M.llama_ftype(), 15);
        for f in Ftype::ALL {
            assert_eq!(Ftype::parse(f.name()), Some(*f));
        }
    }
}
