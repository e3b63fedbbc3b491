//! The state enums as sqlite text, for the server (feature `rusqlite`). Reading an unknown value
//! is an error naming it, never a default: a row written by a newer deployer, or edited by hand,
//! must not silently read as `failed` or `provision`.

use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};

use crate::jobs::{EventLevel, HealthState, JobKind, JobState, StepState};
use crate::types::VmStatus;

macro_rules! sql_text {
    ($($ty:ident),+) => {$(
        impl ToSql for $ty {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }

        impl FromSql for $ty {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                $ty::parse(text).ok_or_else(|| {
                    FromSqlError::Other(
                        format!(concat!("unknown ", stringify!($ty), " {:?} in the database"), text)
                            .into(),
                    )
                })
            }
        }
    )+};
}

sql_text!(
    JobKind,
    JobState,
    StepState,
    EventLevel,
    VmStatus,
    HealthState
);
