//! A counting semaphore of `max_unavailable` slots, one Lease object each.
//! Which slot to take, renew or give back is decided here, purely, from
//! what the API returned; the Kubernetes backend does the compare-and-swap
//! writes (a write against a stale resourceVersion gets 409 Conflict and
//! the choice is made again from a fresh read).

/// One slot as read from the API.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    pub name: String,
    /// None: the Lease object does not exist yet.
    pub resource_version: Option<String>,
    pub holder: Option<String>,
    /// When the holder last renewed it (seconds since the epoch).
    pub renewed: Option<u64>,
}

impl Slot {
    pub fn exists(&self) -> bool {
        self.resource_version.is_some()
    }

    /// Held by someone who renewed it within `expiry` seconds of `now`.
    pub fn live(&self, now: u64, expiry: u64) -> bool {
        self.holder.is_some() && self.renewed.is_some_and(|r| r.saturating_add(expiry) > now)
    }
}

/// What to do next, from one read of all slots.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Already ours (the agent is recursive): renew slot i.
    Renew(usize),
    /// Create the missing Lease i with us as holder.
    Create(usize),
    /// Write us as holder of slot i; `from` names the holder whose lease
    /// expired (a takeover), None for a free slot.
    Take { index: usize, from: Option<String> },
    /// All slots are held by live holders.
    Wait { holders: Vec<String> },
}

/// Pure: the choice for node `me` at `now`. Free slots first, then missing
/// ones, then expired ones (oldest renewal first); holders listed for the
/// operator when there is nothing to take.
pub fn choose(slots: &[Slot], me: &str, now: u64, expiry: u64) -> Choice {
    if let Some(i) = slots.iter().position(|s| s.holder.as_deref() == Some(me)) {
        return Choice::Renew(i);
    }
    if let Some(i) = slots.iter().position(|s| s.exists() && s.holder.is_none()) {
        return Choice::Take {
            index: i,
            from: None,
        };
    }
    if let Some(i) = slots.iter().position(|s| !s.exists()) {
        return Choice::Create(i);
    }
    let expired = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.live(now, expiry))
        .min_by_key(|(_, s)| s.renewed.unwrap_or(0));
    if let Some((i, s)) = expired {
        return Choice::Take {
            index: i,
            from: s.holder.clone(),
        };
    }
    Choice::Wait {
        holders: holders(slots),
    }
}

/// Pure: who holds slots, in slot order.
pub fn holders(slots: &[Slot]) -> Vec<String> {
    slots.iter().filter_map(|s| s.holder.clone()).collect()
}

/// Pure: the slots `me` holds (to give back).
pub fn held_by<'a>(slots: &'a [Slot], me: &str) -> Vec<&'a Slot> {
    slots
        .iter()
        .filter(|s| s.holder.as_deref() == Some(me))
        .collect()
}

/// The Lease name of slot `i` of `group`.
pub fn lease_name(group: &str, i: usize) -> String {
    format!("keelson-{group}-{i}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(holder: Option<&str>, renewed: u64) -> Slot {
        Slot {
            name: "s".into(),
            resource_version: Some("1".into()),
            holder: holder.map(str::to_string),
            renewed: holder.map(|_| renewed),
        }
    }
    fn missing() -> Slot {
        Slot {
            name: "s".into(),
            resource_version: None,
            holder: None,
            renewed: None,
        }
    }

    #[test]
    fn choice_table() {
        let now = 10_000;
        let t: Vec<(Vec<Slot>, Choice)> = vec![
            (vec![missing(), missing()], Choice::Create(0)),
            (vec![slot(Some("a"), now), missing()], Choice::Create(1)),
            (
                vec![slot(Some("a"), now), slot(None, 0)],
                Choice::Take {
                    index: 1,
                    from: None,
                },
            ),
            // Ours already: renew, even when a free one exists (recursive).
            (
                vec![slot(None, 0), slot(Some("me"), now - 5000)],
                Choice::Renew(1),
            ),
            (
                vec![slot(Some("a"), now - 10), slot(Some("b"), now - 20)],
                Choice::Wait {
                    holders: vec!["a".into(), "b".into()],
                },
            ),
            // b stopped renewing 3601 s ago with a 3600 s expiry: taken over.
            (
                vec![slot(Some("a"), now - 10), slot(Some("b"), now - 3601)],
                Choice::Take {
                    index: 1,
                    from: Some("b".into()),
                },
            ),
            // Exactly at the expiry it is no longer live.
            (
                vec![slot(Some("a"), now - 3600)],
                Choice::Take {
                    index: 0,
                    from: Some("a".into()),
                },
            ),
            // The oldest expired one first.
            (
                vec![slot(Some("a"), now - 5000), slot(Some("b"), now - 9000)],
                Choice::Take {
                    index: 1,
                    from: Some("b".into()),
                },
            ),
            // A holder without a renew time cannot be judged live.
            (
                vec![Slot {
                    renewed: None,
                    ..slot(Some("x"), 0)
                }],
                Choice::Take {
                    index: 0,
                    from: Some("x".into()),
                },
            ),
        ];
        for (slots, want) in t {
            assert_eq!(choose(&slots, "me", now, 3600), want, "{slots:?}");
        }
    }

    #[test]
    fn holders_and_mine() {
        let s = vec![slot(Some("a"), 1), slot(None, 0), slot(Some("me"), 1)];
        assert_eq!(holders(&s), vec!["a".to_string(), "me".to_string()]);
        assert_eq!(held_by(&s, "me").len(), 1);
        assert_eq!(lease_name("workers", 2), "keelson-workers-2");
    }
}
