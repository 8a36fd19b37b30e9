//! Boot integration shared by the image builder and the node: ostree's BLS
//! entries and keelson's GRUB menu generator.

pub mod bls;
pub mod grubcfg;
