//! The rules that keep a game's reminders in step with the game, without I/O.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

/// A reminder the game should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedReminder {
    pub reminder_minutes: i32,
    pub notification_time: DateTime<Utc>,
}

/// The reminders a game should have, given its start and reminder minutes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Reminders whose time is now or later, latest minutes first (earliest time first).
    pub scheduled: Vec<PlannedReminder>,
    /// Minutes whose time had already passed: not scheduled.
    pub skipped_past: Vec<i32>,
}

/// A reminder row the game has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExistingReminder {
    pub id: Uuid,
    pub reminder_minutes: i32,
    pub notification_time: DateTime<Utc>,
    pub sent: bool,
}

/// What to change so that the rows match a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Rows to delete.
    pub delete: Vec<Uuid>,
    /// Rows to insert.
    pub insert: Vec<PlannedReminder>,
    /// Rows left as they are.
    pub unchanged: usize,
}

/// Plans a game's reminders. Duplicate minutes collapse into one. A reminder
/// due exactly `now` is scheduled (it goes out at once); earlier ones are
/// skipped. Times are computed on instants, so daylight-saving changes cannot
/// shift them.
pub fn plan(scheduled_at: DateTime<Utc>, minutes: &[i32], now: DateTime<Utc>) -> Plan {
    let distinct: BTreeSet<i32> = minutes.iter().copied().collect();
    let mut plan = Plan {
        scheduled: Vec::new(),
        skipped_past: Vec::new(),
    };
    for reminder_minutes in distinct.into_iter().rev() {
        let notification_time = scheduled_at - Duration::minutes(i64::from(reminder_minutes));
        if notification_time >= now {
            plan.scheduled.push(PlannedReminder {
                reminder_minutes,
                notification_time,
            });
        } else {
            plan.skipped_past.push(reminder_minutes);
        }
    }
    plan
}

/// Compares existing rows with a plan.
///
/// A row whose minutes and time are both still wanted stays untouched, sent
/// or not, so an unrelated edit disturbs nothing and nothing is sent twice for
/// the same time. Every other row is replaced: a moved reminder gets a new row
/// (and a new message id), so it is sent again for its new time even if it was
/// sent for the old one.
pub fn changes(existing: &[ExistingReminder], plan: &Plan) -> Changes {
    let mut changes = Changes::default();
    for row in existing {
        let still_wanted = plan.scheduled.iter().any(|wanted| {
            wanted.reminder_minutes == row.reminder_minutes
                && wanted.notification_time == row.notification_time
        });
        if still_wanted {
            changes.unchanged += 1;
        } else {
            changes.delete.push(row.id);
        }
    }
    changes.insert = plan
        .scheduled
        .iter()
        .filter(|wanted| {
            !existing.iter().any(|row| {
                row.reminder_minutes == wanted.reminder_minutes
                    && row.notification_time == wanted.notification_time
            })
        })
        .copied()
        .collect();
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    fn row(minutes: i32, time: &str, sent: bool) -> ExistingReminder {
        ExistingReminder {
            id: Uuid::new_v4(),
            reminder_minutes: minutes,
            notification_time: at(time),
            sent,
        }
    }

    #[test]
    fn past_reminders_are_skipped_and_one_due_exactly_now_is_kept() {
        let start = at("2030-01-01T12:00:00Z");
        let now = at("2030-01-01T11:45:00Z");
        let plan = plan(start, &[60, 15, 5, 0], now);
        let scheduled: Vec<i32> = plan.scheduled.iter().map(|r| r.reminder_minutes).collect();
        assert_eq!(scheduled, [15, 5, 0], "15 minutes before is exactly now");
        assert_eq!(plan.scheduled[0].notification_time, now);
        assert_eq!(plan.skipped_past, [60]);
    }

    #[test]
    fn duplicate_minutes_collapse_into_one_reminder() {
        let plan = plan(
            at("2030-01-01T12:00:00Z"),
            &[15, 60, 15, 60],
            at("2029-12-31T00:00:00Z"),
        );
        let scheduled: Vec<i32> = plan.scheduled.iter().map(|r| r.reminder_minutes).collect();
        assert_eq!(scheduled, [60, 15]);
    }

    #[test]
    fn times_are_instants_across_a_daylight_saving_change() {
        // Europe/Berlin leaves summer time at 03:00 local on 2030-10-27; a
        // two-hour reminder for a 04:00 local (03:00 UTC) game is at 01:00 UTC.
        let plan = plan(
            at("2030-10-27T03:00:00Z"),
            &[120],
            at("2030-10-26T00:00:00Z"),
        );
        assert_eq!(
            plan.scheduled[0].notification_time,
            at("2030-10-27T01:00:00Z")
        );
    }

    #[test]
    fn an_unrelated_edit_changes_no_row() {
        let existing = [
            row(60, "2030-01-01T11:00:00Z", true),
            row(15, "2030-01-01T11:45:00Z", false),
        ];
        let plan = plan(
            at("2030-01-01T12:00:00Z"),
            &[60, 15],
            at("2030-01-01T10:00:00Z"),
        );
        let changes = changes(&existing, &plan);
        assert_eq!(
            changes,
            Changes {
                delete: vec![],
                insert: vec![],
                unchanged: 2
            }
        );
    }

    #[test]
    fn moving_a_game_replaces_every_row_including_sent_ones() {
        let existing = [
            row(60, "2030-01-01T11:00:00Z", true),
            row(15, "2030-01-01T11:45:00Z", false),
        ];
        let plan = plan(
            at("2030-01-01T13:00:00Z"),
            &[60, 15],
            at("2030-01-01T11:10:00Z"),
        );
        let changes = changes(&existing, &plan);
        assert_eq!(changes.delete, [existing[0].id, existing[1].id]);
        let inserted: Vec<_> = changes
            .insert
            .iter()
            .map(|r| (r.reminder_minutes, r.notification_time))
            .collect();
        assert_eq!(
            inserted,
            [
                (60, at("2030-01-01T12:00:00Z")),
                (15, at("2030-01-01T12:45:00Z"))
            ],
            "the 60-minute reminder, sent for the old time, is sent again for the new one"
        );
    }

    #[test]
    fn changing_minutes_keeps_the_rest() {
        let existing = [
            row(60, "2030-01-01T11:00:00Z", false),
            row(15, "2030-01-01T11:45:00Z", false),
        ];
        let plan = plan(
            at("2030-01-01T12:00:00Z"),
            &[60, 30],
            at("2030-01-01T10:00:00Z"),
        );
        let changes = changes(&existing, &plan);
        assert_eq!(changes.unchanged, 1);
        assert_eq!(changes.delete, [existing[1].id]);
        assert_eq!(changes.insert.len(), 1);
        assert_eq!(changes.insert[0].reminder_minutes, 30);
    }

    #[test]
    fn moving_a_game_into_the_past_removes_every_pending_reminder() {
        let existing = [
            row(60, "2030-01-01T11:00:00Z", false),
            row(15, "2030-01-01T11:45:00Z", false),
        ];
        let now = at("2030-01-01T10:00:00Z");
        let plan = plan(at("2030-01-01T09:00:00Z"), &[60, 15], now);
        assert!(plan.scheduled.is_empty());
        assert_eq!(plan.skipped_past, [60, 15]);
        let changes = changes(&existing, &plan);
        assert_eq!(changes.delete.len(), 2);
        assert!(changes.insert.is_empty());
    }
}
