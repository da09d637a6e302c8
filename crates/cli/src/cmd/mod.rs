pub mod export;
pub mod inspect;
