//! How much of a stream of output lines becomes job events: every line up to a bound, then a count and the last
//! few. One rule for every producer of output lines — a VM's bootstrap over SSH ([`OutputLog`], used by
//! `run_bootstrap`) and a compute backend's child processes ([`capped_sink`], behind every step's
//! [`OutputSink`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use hero_os_tfgrid_deployer_backends::OutputSink;

/// Output lines recorded as events per attempt as they come; after them only a count is kept, and the last
/// [`TAIL_LINES`] are recorded at the end. A bootstrap (or, during a repair, whoever controls the VM) or a
/// backend's child process printing without end must not grow the deployer's memory or its `job_events` table
/// without bound.
const HEAD_LINES: usize = 2000;
const TAIL_LINES: usize = 50;

/// Which of one output stream's lines become events (see [`HEAD_LINES`]).
#[derive(Default)]
pub struct OutputLog {
    /// Lines seen so far.
    pub seen: usize,
    /// The last [`TAIL_LINES`] lines, recorded or not.
    tail: VecDeque<String>,
}

impl OutputLog {
    /// Takes one line; returns it when it is to be recorded now.
    pub fn take(&mut self, line: String) -> Option<String> {
        self.seen += 1;
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(line.clone());
        (self.seen <= HEAD_LINES).then_some(line)
    }

    /// What is still to be recorded at the end: past [`HEAD_LINES`], a line saying how many were left out, then
    /// the last lines not recorded yet.
    pub fn finish(&mut self) -> Vec<String> {
        let unrecorded = self.seen.saturating_sub(HEAD_LINES);
        if unrecorded == 0 {
            return Vec::new();
        }
        let shown = unrecorded.min(self.tail.len());
        let mut out = Vec::with_capacity(shown + 1);
        if unrecorded > shown {
            out.push(format!(
                "… {} output lines not recorded (the first {HEAD_LINES} and the last {shown} are)",
                unrecorded - shown
            ));
        }
        out.extend(self.tail.iter().skip(self.tail.len() - shown).cloned());
        out
    }

    /// The last `n` lines.
    pub fn last(&self, n: usize) -> Vec<String> {
        self.tail
            .iter()
            .skip(self.tail.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

/// An [`OutputSink`] that hands `record` the lines [`OutputLog`] keeps: the first [`HEAD_LINES`] as they come,
/// and, once the backend has dropped its last clone of the sink (its call is over), the count of the lines left
/// out and the last ones.
pub fn capped_sink(record: impl Fn(String) + Send + Sync + 'static) -> OutputSink {
    let capped = Arc::new(CappedSink {
        log: Mutex::new(OutputLog::default()),
        record: Box::new(record),
    });
    Arc::new(move |line: &str| capped.take(line))
}

struct CappedSink {
    log: Mutex<OutputLog>,
    record: Box<dyn Fn(String) + Send + Sync>,
}

impl CappedSink {
    fn take(&self, line: &str) {
        let now = self
            .log
            .lock()
            .ok()
            .and_then(|mut l| l.take(line.to_owned()));
        if let Some(line) = now {
            (self.record)(line);
        }
    }
}

impl Drop for CappedSink {
    fn drop(&mut self) {
        let rest = self.log.get_mut().map(|l| l.finish()).unwrap_or_default();
        for line in rest {
            (self.record)(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_recorded_head_then_count_then_tail_and_memory_stays_bounded() {
        // (lines printed, recorded as they come, recorded at the end)
        for (printed, live, end) in [
            (0, 0, 0),
            (3, 3, 0),
            (HEAD_LINES, HEAD_LINES, 0),
            (HEAD_LINES + 1, HEAD_LINES, 1),
            (HEAD_LINES + TAIL_LINES, HEAD_LINES, TAIL_LINES),
            (HEAD_LINES + TAIL_LINES + 1, HEAD_LINES, TAIL_LINES + 1),
            (1_000_000, HEAD_LINES, TAIL_LINES + 1),
        ] {
            let mut log = OutputLog::default();
            let recorded = (0..printed)
                .filter(|i| log.take(format!("line {i}")).is_some())
                .count();
            assert_eq!(recorded, live, "{printed}");
            assert!(log.tail.len() <= TAIL_LINES);
            let rest = log.finish();
            assert_eq!(rest.len(), end, "{printed}");
            if printed > HEAD_LINES {
                assert_eq!(rest.last().unwrap(), &format!("line {}", printed - 1));
            }
            if printed > HEAD_LINES + TAIL_LINES {
                assert!(
                    rest[0].contains(&format!(
                        "{} output lines not recorded",
                        printed - HEAD_LINES - TAIL_LINES
                    )),
                    "{}",
                    rest[0]
                );
            }
            assert_eq!(log.last(5).len(), printed.min(5));
        }
    }

    #[test]
    fn a_capped_sink_records_the_head_live_and_the_count_and_tail_when_the_backend_lets_go() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let got = got.clone();
            capped_sink(move |l| got.lock().unwrap().push(l))
        };
        let clone = sink.clone();
        for i in 0..HEAD_LINES + TAIL_LINES + 10 {
            clone(&format!("line {i}"));
        }
        drop(clone);
        assert_eq!(
            got.lock().unwrap().len(),
            HEAD_LINES,
            "only the head while a clone lives"
        );
        drop(sink);
        let got = got.lock().unwrap();
        assert_eq!(got.len(), HEAD_LINES + 1 + TAIL_LINES);
        assert!(
            got[HEAD_LINES].contains("10 output lines not recorded"),
            "{}",
            got[HEAD_LINES]
        );
        assert_eq!(
            got.last().unwrap(),
            &format!("line {}", HEAD_LINES + TAIL_LINES + 9)
        );
    }
}
