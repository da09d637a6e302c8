pub mod device;
pub mod export;
pub mod inspect;
pub mod keygen;
pub mod rotate;
pub mod select;
pub mod sign;
pub mod verify;
