//! The token budget of one recall: what a hit costs when it is injected into the agent's turn.
//!
//! The budget (`services.osmoda.memory.maxInjectedTokens`, about 1,500) is a ceiling on what a
//! recall adds to the model's context, so the estimate errs high. A hit is injected as the
//! line that introduces it, `[path:line, at]`, then its text, then a blank line (the bridge's
//! `memory_recall` renders exactly that), so all of it is counted, not the text alone: fifty
//! short hits carry about 600 tokens of those lines. An ASCII character counts a quarter of a
//! token (English runs about four characters a token); any other character a whole one: a
//! CJK character is one token or more in the usual tokenizers, where "characters / 4" let a
//! recall of Chinese notes inject four times its budget.

/// Estimated tokens of `s` (see the module docs): ASCII characters / 4, rounded up, plus one
/// per other character.
pub fn estimate(s: &str) -> usize {
    let (ascii, other) = s.chars().fold((0usize, 0usize), |(a, o), c| {
        if c.is_ascii() {
            (a + 1, o)
        } else {
            (a, o + 1)
        }
    });
    ascii.div_ceil(4) + other
}

/// The line that introduces a hit when it is injected (the bridge's rendering).
pub fn hit_header(path: &str, line_start: u32, at: &str) -> String {
    format!("[{path}:{line_start}, {at}]\n")
}

/// What one hit costs: its header, its text and the blank line after it.
pub fn hit_cost(header: &str, text: &str) -> usize {
    estimate(&format!("{header}{text}\n\n"))
}

/// The longest prefix of `text` (whole characters) whose hit, with `header`, costs at most
/// `budget`; `None` when not even the header fits.
pub fn cut_to(header: &str, text: &str, budget: usize) -> Option<String> {
    if hit_cost(header, "") > budget {
        return None;
    }
    // Binary search over character counts: the cost grows with the prefix.
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let prefix = |n: usize| chars.get(n).map_or(text, |&(i, _)| &text[..i]);
    let (mut lo, mut hi) = (0, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if hit_cost(header, prefix(mid)) <= budget {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(prefix(lo).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_err_high_for_text_that_is_not_english() {
        let check = |s: &str, expected: usize| assert_eq!(estimate(s), expected, "{s:?}");
        check("", 0);
        check("nginx", 2);
        check("disk full", 3);
        // One per CJK character: "characters / 4" made these 2 tokens.
        check("磁盘已满，服务停止", 9);
        check("Ошибка", 6);
        check("café", 2);
    }

    #[test]
    fn a_cut_hit_fits_and_keeps_whole_characters() {
        let header = hit_header("memory/2026-11-30.md", 3, "2026-11-30T03:10:00Z");
        for text in ["x".repeat(10_000), "磁盘".repeat(3_000), "aé".repeat(4_000)] {
            for budget in [hit_cost(&header, ""), 20, 100, 1500] {
                let cut = cut_to(&header, &text, budget).expect("header fits");
                assert!(hit_cost(&header, &cut) <= budget, "{budget}");
                assert!(text.starts_with(&cut));
                // Longest: one more character would not fit.
                let next =
                    &text[..cut.len() + text[cut.len()..].chars().next().map_or(0, char::len_utf8)];
                assert!(next == cut || hit_cost(&header, next) > budget);
            }
        }
        assert_eq!(cut_to(&header, "x", 3), None);
        assert_eq!(cut_to(&header, "short", 1500).as_deref(), Some("short"));
    }
}
