//! Local development and test support for imagejobs: the emulator process, provisioning, the
//! local runner that hosts the Lambda handlers, and result inspection.

pub mod chaos;
pub mod connection;
pub mod emulator;
pub mod inspect;
pub mod preview;
pub mod provision;
pub mod runner;
