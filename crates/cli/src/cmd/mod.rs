pub mod export;
pub mod inspect;
pub mod quantize;
