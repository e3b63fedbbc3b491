//! Resuming a saved job by step *name*. A job's step rows were written with the step list of the
//! deployer that created it; the deployer resuming it (after a retry, or a restart across an
//! upgrade) may have a different list. Pairing rows and steps by position would run a saved
//! `wait_ssh` row as whatever step now sits at its index, and skip the last step (it has no
//! row) — a job that "succeeds" without finalizing.
//!
//! The rule, in [`plan`]:
//! * every saved row is matched to the step of the same name in the current table;
//! * steps of the table without a row are new (an upgrade inserted them): they get a `pending`
//!   row at their place and run in table order like any step not done — a step inserted before
//!   steps the job already did runs then, relying only on the context of the steps before it,
//!   which every step does;
//! * a saved row whose name is not in the table (a step renamed or removed), a name saved twice,
//!   or rows in another order than the table's fail the job with a reason naming them: nothing
//!   can say what such a job has done.

use hero_os_tfgrid_deployer_sdk::jobs::{StepRecord, StepState};

/// How a job's saved rows map onto the current table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePlan {
    /// One row per step of the table, in table order, with its new index; new steps `pending`.
    pub rows: Vec<StepRecord>,
    /// `(old index, new index)` of saved rows that move.
    pub moves: Vec<(u32, u32)>,
    /// `(index, name)` of rows to add.
    pub added: Vec<(u32, &'static str)>,
}

impl ResumePlan {
    /// Whether the stored rows must change.
    pub fn changes_rows(&self) -> bool {
        !self.moves.is_empty() || !self.added.is_empty()
    }
}

/// Matches `saved` rows to `table` by name (see the module docs).
pub fn plan(table: &[&'static str], saved: &[StepRecord]) -> Result<ResumePlan, String> {
    let mut last: Option<usize> = None;
    let mut at: Vec<Option<&StepRecord>> = vec![None; table.len()];
    for row in saved {
        let Some(pos) = table.iter().position(|n| *n == row.name) else {
            return Err(format!(
                "saved step {} ({}/{}) is not a step of this deployer ({}); the job was made by another version: provision again",
                row.name,
                row.index,
                saved.len(),
                table.join(", ")
            ));
        };
        if at[pos].is_some() {
            return Err(format!("saved step {} appears twice in the job", row.name));
        }
        if last.is_some_and(|l| pos < l) {
            return Err(format!(
                "saved steps are in another order than this deployer's ({}): {} comes after {}",
                table.join(", "),
                row.name,
                table[last.unwrap_or_default()]
            ));
        }
        last = Some(pos);
        at[pos] = Some(row);
    }
    let mut plan = ResumePlan {
        rows: Vec::with_capacity(table.len()),
        moves: Vec::new(),
        added: Vec::new(),
    };
    for (pos, (name, row)) in table.iter().zip(at).enumerate() {
        let index = pos as u32 + 1;
        match row {
            Some(row) => {
                if row.index != index {
                    plan.moves.push((row.index, index));
                }
                plan.rows.push(StepRecord {
                    index,
                    ..row.clone()
                });
            }
            None => {
                plan.added.push((index, name));
                plan.rows.push(StepRecord {
                    index,
                    name: (*name).to_owned(),
                    state: StepState::Pending,
                    attempts: 0,
                    started_at_ms: None,
                    finished_at_ms: None,
                    duration_ms: None,
                    message: None,
                });
            }
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(names: &[&str]) -> Vec<StepRecord> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| StepRecord {
                index: i as u32 + 1,
                name: (*n).to_owned(),
                state: if i < 2 {
                    StepState::Done
                } else {
                    StepState::Pending
                },
                attempts: u32::from(i < 2),
                started_at_ms: None,
                finished_at_ms: None,
                duration_ms: None,
                message: None,
            })
            .collect()
    }

    #[test]
    fn the_same_list_changes_nothing() {
        let p = plan(&["a", "b", "c"], &rows(&["a", "b", "c"])).unwrap();
        assert!(!p.changes_rows());
        assert_eq!(p.rows, rows(&["a", "b", "c"]));
    }

    #[test]
    fn an_inserted_step_gets_a_pending_row_and_later_rows_move() {
        let p = plan(&["a", "b", "new", "c"], &rows(&["a", "b", "c"])).unwrap();
        assert_eq!(p.moves, [(3, 4)]);
        assert_eq!(p.added, [(3, "new")]);
        let names: Vec<(&str, StepState, u32)> = p
            .rows
            .iter()
            .map(|r| (r.name.as_str(), r.state, r.index))
            .collect();
        assert_eq!(
            names,
            [
                ("a", StepState::Done, 1),
                ("b", StepState::Done, 2),
                ("new", StepState::Pending, 3),
                ("c", StepState::Pending, 4)
            ]
        );
        // Appended at the end too (the position pairing skipped exactly this one).
        let p = plan(&["a", "b", "c", "last"], &rows(&["a", "b", "c"])).unwrap();
        assert_eq!((p.moves.len(), p.added.clone()), (0, vec![(4, "last")]));
    }

    #[test]
    fn unknown_duplicated_or_reordered_rows_are_refused_with_their_names() {
        let table = ["a", "b", "c"];
        for (saved, want) in [
            (&["a", "renamed", "c"][..], "saved step renamed"),
            (&["a", "b", "b"][..], "b appears twice"),
            (&["b", "a", "c"][..], "a comes after b"),
        ] {
            let err = plan(&table, &rows(saved)).unwrap_err();
            assert!(err.contains(want), "{saved:?}: {err}");
        }
    }
}
