//! Splits a markdown note into the chunks the index holds.
//!
//! A chunk is one section (a heading and the text up to the next heading of level 1–3); a
//! section longer than [`MAX_CHUNK_CHARS`] is split at blank lines, and a paragraph longer
//! than that at character boundaries. A section may carry a metadata line right under its
//! heading, as osModa writes it: `at: 2026-11-30T03:10:00Z · category: incident · tags: a, b`;
//! its `at` dates the chunk. Without one, a daily note's chunks are dated by the file name
//! (midnight UTC) and `MEMORY.md`'s by the fallback the caller gives (when the section was
//! first seen).
//!
//! Lines end at `\n`, `\r\n` or a bare `\r`, as CommonMark says: a note holding a bare `\r`
//! is split where every other markdown reader splits it.

/// Longest chunk text in characters (about 250 tokens; the model reads at most 256).
pub const MAX_CHUNK_CHARS: usize = 1000;

/// One indexed piece of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Note path relative to the memory root (`MEMORY.md`, `memory/2026-11-30.md`).
    pub path: String,
    /// Position of the chunk in its file (0-based).
    pub ord: u32,
    /// First line of the chunk in the file (1-based).
    pub line_start: u32,
    /// Last line of the chunk in the file (1-based, inclusive).
    pub line_end: u32,
    /// The section heading without `#`s (empty before the first heading).
    pub heading: String,
    /// The chunk's text, heading line included.
    pub text: String,
    /// When the note was made, Unix seconds (UTC).
    pub ts: i64,
}

impl Chunk {
    /// The text that is embedded and keyword-indexed: the chunk with its context (the note's
    /// date or "durable") in front, so "what happened on the 3rd" can match. The `at:` field
    /// of a metadata line is left out: the chunk's date is already in front and its time
    /// filters by `timeframe`, while the seconds would make a note's vector depend on the
    /// moment it was written (the same words stored twice would embed differently).
    pub fn enriched(&self) -> String {
        let ctx = daily_date(&self.path).unwrap_or("durable fact");
        // The metadata line is the first non-empty line under the section's heading.
        let lines = split_lines(&self.text);
        let skip = usize::from(lines.first().is_some_and(|l| heading_level(l).is_some()));
        let meta = (skip..lines.len()).find(|&i| !lines[i].trim().is_empty());
        let mut out = format!("[{ctx}] ");
        for (i, line) in lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            match (Some(i) == meta).then(|| strip_meta_at(line)).flatten() {
                Some(rest) => out.push_str(rest),
                None => out.push_str(line),
            }
        }
        out
    }
}

/// Chunks of one note. `fallback_ts` dates sections with neither a metadata line nor a dated
/// file name.
pub fn chunk_note(path: &str, content: &str, fallback_ts: i64) -> Vec<Chunk> {
    chunk_note_dated(path, content, &|_| fallback_ts)
}

/// [`chunk_note`] where an undated section of an undated file is dated by `undated(text)`,
/// `text` being the section's first chunk (so a section keeps the date it was first seen).
pub fn chunk_note_dated(path: &str, content: &str, undated: &dyn Fn(&str) -> i64) -> Vec<Chunk> {
    let file_ts = daily_date(path).and_then(parse_date_ts);
    let lines = split_lines(content);
    let mut sections: Vec<(usize, usize)> = Vec::new(); // [start, end) line indexes
    let mut start = 0;
    for (i, l) in lines.iter().enumerate() {
        if i > start && heading_level(l).is_some_and(|lv| lv <= 3) {
            sections.push((start, i));
            start = i;
        }
    }
    if start < lines.len() {
        sections.push((start, lines.len()));
    }
    let mut out = Vec::new();
    for (s, e) in sections {
        let first = lines[s];
        let (heading, level) = match heading_level(first) {
            Some(lv) => (first.trim_start_matches('#').trim().to_string(), lv),
            None => (String::new(), 0),
        };
        let body_start = if level > 0 { s + 1 } else { s };
        let body_empty = lines[body_start..e].iter().all(|l| l.trim().is_empty());
        // A lone title ("# Memory") says nothing to recall.
        if body_empty && level <= 1 {
            continue;
        }
        let dated = lines[body_start..e]
            .iter()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| parse_meta_at(l))
            .or(file_ts);
        let first = out.len();
        for (ls, le) in split_long(&lines, s, e) {
            let text = trim_block(&lines[ls..le]);
            if text.is_empty() {
                continue;
            }
            for piece in split_chars(&text) {
                out.push(Chunk {
                    path: path.to_string(),
                    ord: out.len() as u32,
                    line_start: ls as u32 + 1,
                    line_end: le as u32,
                    heading: heading.clone(),
                    text: piece,
                    ts: 0,
                });
            }
        }
        if let Some(head) = out.get(first) {
            let ts = dated.unwrap_or_else(|| undated(&head.text));
            out[first..].iter_mut().for_each(|c| c.ts = ts);
        }
    }
    out
}

/// The lines of `s`, ended by `\n`, `\r\n` or `\r` (CommonMark's line endings).
pub(crate) fn split_lines(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (b, mut start, mut i) = (s.as_bytes(), 0, 0);
    while i < b.len() {
        match b[i] {
            b'\n' => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            b'\r' => {
                out.push(&s[start..i]);
                if b.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    if start < b.len() {
        out.push(&s[start..]);
    }
    out
}

fn heading_level(line: &str) -> Option<usize> {
    let n = line.bytes().take_while(|b| *b == b'#').count();
    (n > 0 && n <= 6 && line[n..].starts_with(' ')).then_some(n)
}

/// Split lines `[s, e)` into blocks of at most MAX_CHUNK_CHARS at blank lines.
fn split_long(lines: &[&str], s: usize, e: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = s;
    let mut size = 0;
    for i in s..e {
        let len = lines[i].chars().count() + 1;
        if size + len > MAX_CHUNK_CHARS && i > start && lines[i - 1].trim().is_empty() {
            out.push((start, i));
            start = i;
            size = 0;
        }
        size += len;
    }
    out.push((start, e));
    out
}

fn trim_block(lines: &[&str]) -> String {
    lines.join("\n").trim().to_string()
}

fn split_chars(text: &str) -> Vec<String> {
    if text.chars().count() <= MAX_CHUNK_CHARS {
        return vec![text.to_string()];
    }
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(MAX_CHUNK_CHARS)
        .map(|c| c.iter().collect::<String>())
        .collect()
}

/// `2026-11-30` for `memory/2026-11-30.md`.
/// The date of a daily note: `memory/YYYY-MM-DD.md`, or a further note of that day
/// (`memory/YYYY-MM-DD-2.md`, a part osModa starts when the first is full, or OpenClaw's
/// `memory/YYYY-MM-DD-<slug>.md`).
pub(crate) fn daily_date(path: &str) -> Option<&str> {
    let name = path.strip_prefix("memory/")?.strip_suffix(".md")?;
    let date = name.get(..10)?;
    let rest = &name[date.len()..];
    ((rest.is_empty() || (rest.len() > 1 && rest.starts_with('-')))
        && parse_date_ts(date).is_some())
    .then_some(date)
}

fn parse_date_ts(s: &str) -> Option<i64> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    let d = time::Date::parse(s, &fmt).ok()?;
    Some(d.midnight().assume_utc().unix_timestamp())
}

/// The rest of an osModa metadata line after its `at:` field (`category: x · tags: y`, or
/// empty), or `None` for any other line.
fn strip_meta_at(line: &str) -> Option<&str> {
    parse_meta_at(line)?;
    let t = line.trim();
    Some(t.split_once(" · ").map_or("", |(_, rest)| rest))
}

/// The `at:` value of an osModa metadata line.
fn parse_meta_at(line: &str) -> Option<i64> {
    let first = line.trim().split(" · ").next()?;
    let v = first.strip_prefix("at: ")?;
    time::OffsetDateTime::parse(v.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(path: &str, content: &str, expected: &[(&str, &str, i64, u32, u32)]) {
        let got: Vec<_> = chunk_note(path, content, 7)
            .into_iter()
            .map(|c| (c.heading, c.text, c.ts, c.line_start, c.line_end))
            .collect();
        let want: Vec<_> = expected
            .iter()
            .map(|(h, t, ts, a, b)| (h.to_string(), t.to_string(), *ts, *a, *b))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn sections_titles_and_dates() {
        let day = 1_795_996_800; // 2026-11-30
        check(
            "memory/2026-11-30.md",
            "# 2026-11-30\n\n## nginx down\nat: 2026-11-30T03:10:00Z · category: incident\n\ncert expired\n## plain\nno meta\n",
            &[
                ("nginx down", "## nginx down\nat: 2026-11-30T03:10:00Z · category: incident\n\ncert expired", day + 3 * 3600 + 600, 3, 6),
                ("plain", "## plain\nno meta", day, 7, 8),
            ],
        );
        check(
            "MEMORY.md",
            "intro line\n# Title\n",
            &[("", "intro line", 7, 1, 1)],
        );
        check("MEMORY.md", "", &[]);
        check(
            "memory/notes.md",
            "### deep\nx",
            &[("deep", "### deep\nx", 7, 1, 2)],
        );
        // `#tag` is not a heading; level-4 headings stay inside their section.
        check(
            "MEMORY.md",
            "## a\n#tag\n#### sub\ny",
            &[("a", "## a\n#tag\n#### sub\ny", 7, 1, 4)],
        );
    }

    /// A bare `\r` ends a line as `\n` does (CommonMark): a heading after one is a heading
    /// here too, on the line every markdown reader puts it.
    #[test]
    fn every_line_ending_ends_a_line() {
        check(
            "MEMORY.md",
            "## a\rtext\r## b\r\nmore\n## c\nlast",
            &[
                ("a", "## a\ntext", 7, 1, 2),
                ("b", "## b\nmore", 7, 3, 4),
                ("c", "## c\nlast", 7, 5, 6),
            ],
        );
        assert_eq!(split_lines("a\r\rb\r\n\nc\r"), ["a", "", "b", "", "c"]);
        assert_eq!(split_lines(""), Vec::<&str>::new());
    }

    /// Undated sections of `MEMORY.md` take their date from the caller, by their text;
    /// dated ones and daily notes never ask.
    #[test]
    fn undated_sections_are_dated_by_the_caller() {
        let asked = std::cell::RefCell::new(Vec::new());
        let undated = |t: &str| {
            asked.borrow_mut().push(t.to_string());
            if t.contains("old") {
                100
            } else {
                200
            }
        };
        let got: Vec<i64> = chunk_note_dated(
            "MEMORY.md",
            "## old fact\nx\n## new fact\ny\n## dated\nat: 1970-01-01T00:00:05Z\n",
            &undated,
        )
        .iter()
        .map(|c| c.ts)
        .collect();
        assert_eq!(got, [100, 200, 5]);
        assert_eq!(asked.borrow().len(), 2);
        let daily = chunk_note_dated("memory/1970-01-02.md", "## x\ny", &undated);
        assert_eq!(daily[0].ts, 86_400);
        assert_eq!(asked.borrow().len(), 2);
    }

    #[test]
    fn long_sections_split_at_blank_lines_then_by_chars() {
        let para = "word ".repeat(150); // 750 chars
        let content = format!("## big\n{para}\n\n{para}\n");
        let chunks = chunk_note("MEMORY.md", &content, 0);
        assert_eq!(chunks.len(), 2);
        assert!(chunks
            .iter()
            .all(|c| c.text.chars().count() <= MAX_CHUNK_CHARS));
        assert_eq!(chunks.iter().map(|c| c.ord).collect::<Vec<_>>(), vec![0, 1]);
        let huge = format!("## one line\n{}", "x".repeat(2500));
        let chunks = chunk_note("MEMORY.md", &huge, 0);
        assert_eq!(chunks.len(), 3);
        assert!(chunks
            .iter()
            .all(|c| c.text.chars().count() <= MAX_CHUNK_CHARS));
    }

    #[test]
    fn enriched_names_the_day() {
        let c = &chunk_note("memory/2026-01-02.md", "## x\ny", 0)[0];
        assert_eq!(c.enriched(), "[2026-01-02] ## x\ny");
        let c = &chunk_note("MEMORY.md", "## x\ny", 0)[0];
        assert_eq!(c.enriched(), "[durable fact] ## x\ny");
    }

    /// The same note written at two moments embeds and indexes the same text; only a real
    /// metadata line loses its `at:` field.
    #[test]
    fn enriched_leaves_out_the_time_of_writing() {
        let note = |at: &str| {
            format!("## disk full\nat: {at} · category: incident · tags: db\n\nvacuumed")
        };
        let a = &chunk_note("memory/2026-01-02.md", &note("2026-01-02T03:04:05Z"), 0)[0];
        let b = &chunk_note("memory/2026-01-02.md", &note("2026-01-02T23:59:59Z"), 0)[0];
        assert_ne!(a.ts, b.ts);
        assert_eq!(a.enriched(), b.enriched());
        assert_eq!(
            a.enriched(),
            "[2026-01-02] ## disk full\ncategory: incident · tags: db\n\nvacuumed"
        );
        let only_at = &chunk_note("MEMORY.md", "## x\nat: 2026-01-02T03:04:05Z\n\ny", 0)[0];
        assert_eq!(only_at.enriched(), "[durable fact] ## x\n\n\ny");
        // Not a metadata line: an `at:` that is no time, or one further down, stays.
        for text in [
            "## x\nat: noon · category: a",
            "## x\ny\nat: 2026-01-02T03:04:05Z",
        ] {
            let c = &chunk_note("MEMORY.md", text, 0)[0];
            assert_eq!(c.enriched(), format!("[durable fact] {text}"));
        }
    }
}
