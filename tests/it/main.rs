//! Integration tests: the real `strata` binary, real clients (tokio-postgres, psql), real files.
//! One test binary so DataFusion is linked once.
mod harness;

mod backup;
mod backup_crash;
mod big_file;
mod checkpoint;
mod clients;
mod crash;
mod ddl_and_errors;
mod disk_full;
mod encryption;
mod housekeeping;
mod in_place;
mod instant_restore;
mod logs;
mod ops;
mod powercut;
mod queries;
mod readonly;
mod restore;
mod security;
mod shipping;
mod stores;
