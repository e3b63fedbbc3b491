//! Splitting a child's byte output (a remote command over SSH, a local `tofu`) into lines with a bound on each
//! line. Without one, a process printing without a newline grows the reader's buffer without end; every reader of
//! child output goes through [`LineSplitter`] so that bound holds everywhere.

/// The longest output line kept for people (job events, error tails), in bytes; longer lines are cut and say so.
pub const MAX_LINE: usize = 8 * 1024;

/// Splits a byte stream into lines, keeping a partial last line until more data or the end.
pub struct LineSplitter {
    buf: Vec<u8>,
    /// How much of `buf` is known to hold no newline (so a long line is scanned once, not once per chunk).
    scanned: usize,
    /// Inside a line already cut at `max`: its rest is dropped up to the next newline.
    skipping: bool,
    max: usize,
}

impl Default for LineSplitter {
    /// Lines cut at [`MAX_LINE`].
    fn default() -> Self {
        LineSplitter::new(MAX_LINE)
    }
}

impl LineSplitter {
    /// Lines cut at `max` bytes.
    pub fn new(max: usize) -> Self {
        LineSplitter {
            buf: Vec::new(),
            scanned: 0,
            skipping: false,
            max,
        }
    }

    /// Takes the next chunk; hands `out` every line it completes (without its `\n` or `\r\n`).
    pub fn push(&mut self, data: &[u8], out: &mut impl FnMut(String)) {
        self.buf.extend_from_slice(data);
        loop {
            let newline = self.buf[self.scanned..]
                .iter()
                .position(|b| *b == b'\n')
                .map(|i| i + self.scanned);
            if self.skipping {
                match newline {
                    Some(i) => {
                        self.buf.drain(..=i);
                        self.scanned = 0;
                        self.skipping = false;
                        continue;
                    }
                    None => {
                        self.buf.clear();
                        self.scanned = 0;
                        return;
                    }
                }
            }
            let (mut line, cut) = match newline {
                Some(i) if i <= self.max => {
                    let rest = self.buf.split_off(i + 1);
                    let mut line = std::mem::replace(&mut self.buf, rest);
                    line.pop();
                    (line, false)
                }
                _ if self.buf.len() > self.max => {
                    let rest = self.buf.split_off(self.max);
                    self.skipping = true;
                    (std::mem::replace(&mut self.buf, rest), true)
                }
                _ => {
                    self.scanned = self.buf.len();
                    return;
                }
            };
            self.scanned = 0;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let mut text = String::from_utf8_lossy(&line).into_owned();
            if cut {
                text.push_str(&format!(" … [line cut at {} bytes]", self.max));
            }
            out(text);
        }
    }

    /// The end of the stream: hands `out` a last line that had no newline.
    pub fn finish(&mut self, out: &mut impl FnMut(String)) {
        if !self.buf.is_empty() && !self.skipping {
            out(String::from_utf8_lossy(&self.buf).into_owned());
        }
        self.buf.clear();
        self.scanned = 0;
        self.skipping = false;
    }

    /// Bytes held for a line not complete yet.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

/// `line` cut to [`MAX_LINE`] bytes (on a character boundary) for people, saying so when it was.
pub fn for_people(line: &str) -> String {
    if line.len() <= MAX_LINE {
        return line.to_owned();
    }
    let mut end = MAX_LINE;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} … [line cut at {MAX_LINE} bytes]", &line[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        s.push(b"hel", &mut |l| got.push(l));
        s.push(b"lo\r\nwor", &mut |l| got.push(l));
        s.push(b"ld\n\nlast", &mut |l| got.push(l));
        s.finish(&mut |l| got.push(l));
        assert_eq!(got, vec!["hello", "world", "", "last"]);
    }

    #[test]
    fn a_line_without_end_is_cut_and_memory_stays_bounded() {
        let mut s = LineSplitter::default();
        let mut got = Vec::new();
        // 1 MiB without a newline, in 4 KiB chunks, then the end of that line and a normal one.
        for _ in 0..256 {
            s.push(&[b'x'; 4096], &mut |l| got.push(l));
            assert!(s.pending() <= MAX_LINE + 4096, "{}", s.pending());
        }
        s.push(b"tail of it\nnext\n", &mut |l| got.push(l));
        // A long line whose newline arrives in the same chunk is cut too.
        let mut long = vec![b'y'; MAX_LINE + 10];
        long.extend_from_slice(b"\nafter\n");
        s.push(&long, &mut |l| got.push(l));
        // A cut line that never ends is not handed out a second time at the end.
        s.push(&vec![b'z'; MAX_LINE + 1], &mut |l| got.push(l));
        s.finish(&mut |l| got.push(l));
        assert_eq!(
            got.len(),
            5,
            "{:?}",
            got.iter().map(|l| l.len()).collect::<Vec<_>>()
        );
        assert!(
            got[0].starts_with(&"x".repeat(MAX_LINE))
                && got[0].ends_with("[line cut at 8192 bytes]")
        );
        assert_eq!(got[1], "next");
        assert!(got[2].starts_with('y') && got[2].ends_with("[line cut at 8192 bytes]"));
        assert_eq!(got[3], "after");
        assert!(got[4].starts_with('z') && got[4].ends_with("[line cut at 8192 bytes]"));
    }

    #[test]
    fn a_long_allowed_line_arriving_in_small_chunks_is_whole() {
        let mut s = LineSplitter::new(1 << 20);
        let mut got = Vec::new();
        for _ in 0..100 {
            s.push(&[b'j'; 1000], &mut |l| got.push(l));
        }
        s.push(b"\n", &mut |l| got.push(l));
        assert_eq!(got, vec!["j".repeat(100_000)]);
    }

    #[test]
    fn for_people_cuts_on_a_character_boundary() {
        assert_eq!(for_people("short"), "short");
        let long = "é".repeat(MAX_LINE); // 2 bytes each
        let cut = for_people(&long);
        assert!(cut.ends_with("[line cut at 8192 bytes]"));
        assert!(cut.len() < MAX_LINE + 40);
    }
}
