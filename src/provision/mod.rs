//! Provisioning: kickstart files for RHEL-family installers, `keelson
//! install` for keelson's own nodes, and the PXE artifacts that run it.
pub mod ignition;
pub mod install;
pub mod kickstart;
pub mod pxe;
