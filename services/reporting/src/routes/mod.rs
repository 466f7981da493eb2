pub mod admin;
pub mod campaigns;
pub mod me;
pub mod ops;
