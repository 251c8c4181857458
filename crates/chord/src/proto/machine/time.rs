//! Time: retries and failures of lookups, late replica acknowledgements.

use rs2p_mesh::Context;

use super::*;
use crate::config::ms;
use crate::ChordError;

impl ChordMachine {
    pub(super) fn tick(&mut self, cx: &mut Context<'_>) {
        let now = self.now;
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.stats.timeouts += 1;
            let Some(p) = self.pending.get(&id) else {
                continue;
            };
            if p.attempts < self.cfg.attempts.max(1) {
                self.launch(cx, id, None);
            } else if let Some(p) = self.pending.remove(&id) {
                if p.purpose == Purpose::User {
                    self.stats.failed += 1;
                    self.completions.push(Completion {
                        id,
                        result: Err(ChordError::Unreachable {
                            attempts: p.attempts,
                        }),
                        hops: 0,
                    });
                }
            }
        }
        let late: Vec<u64> = self
            .replicating
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(&a, _)| a)
            .collect();
        for a in late {
            self.finish_replicating(cx, a);
        }
        let keep = ms(self.cfg.request_timeout) * u64::from(self.cfg.attempts.max(1));
        self.outbox
            .retain(|_, (t, _)| now.saturating_sub(*t) <= keep);
    }
}
